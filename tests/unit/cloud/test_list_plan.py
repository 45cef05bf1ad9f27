"""Query plans that matter with a million tasks: the default task list (fleet runs' children left out) reads
the tasks newest first from an index, never every task through another index and a sort (that took 1.1 s,
docs/performance.md); the background passes read the small indexes of the tasks they can find."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event

from cloud.db.engine import Database, migrate
from cloud.db.types import utcnow
from cloud.hub import Hub
from cloud.services import fleet, retries, runs
from cloud.services.tasks import TaskFilter, list_tasks


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database: the plans read are SQLite's (`EXPLAIN QUERY PLAN`)."""
    database = Database(f"sqlite:///{tmp_path / 'cloud.db'}", Hub())
    try:
        migrate(database.engine)
        yield database
    finally:
        database.dispose()


def _plans(db: Database, run: Callable[[Connection], object]) -> list[tuple[str, list[str]]]:
    """Each statement `run` executes, with SQLite's plan for it."""
    with db.transaction() as conn:
        seen: list[tuple[str, Any]] = []

        def record(*args: Any) -> None:
            seen.append((args[2], args[3]))

        event.listen(conn, "before_cursor_execute", record)
        run(conn)
        event.remove(conn, "before_cursor_execute", record)
        return [
            (sql, [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]) for sql, params in seen
        ]


def test_the_default_list_reads_the_created_index_in_order(db: Database) -> None:
    flt = TaskFilter(fleet=fleet.list_condition(None, None, by_agent=False))
    plans = _plans(db, lambda conn: list_tasks(conn, flt, page=1, page_size=10))
    (page_sql, plan), *_ = [(sql, plan) for sql, plan in plans if "ORDER BY" in sql]
    assert "parent_id IS NULL" in page_sql
    assert plan == ["SCAN tasks USING INDEX ix_tasks_created"], plan


def test_the_background_passes_read_the_indexes_of_tasks_whose_time_is_set(db: Database) -> None:
    """Lapsed leases, expired deliveries and due retries each read its partial index (migration 0012: a task is
    in it only while that time is set), never every task."""
    now = utcnow()
    passes: dict[str, Callable[[Connection], object]] = {
        "ix_tasks_status_lease": runs.reap_expired,
        "ix_tasks_status_expires": lambda conn: retries.expire_undelivered(conn, now),
        "ix_tasks_status_retry": lambda conn: retries.announce_due_retries(conn, now - timedelta(seconds=5), now),
    }
    first_plans = {index: _plans(db, run)[0][1] for index, run in passes.items()}
    with db.reading() as conn:
        partial = {row[1] for row in conn.exec_driver_sql("PRAGMA index_list(tasks)") if row[4]}
    assert set(passes) <= partial
    for index, plan in first_plans.items():
        assert plan[0].startswith(f"SEARCH tasks USING INDEX {index} "), first_plans
