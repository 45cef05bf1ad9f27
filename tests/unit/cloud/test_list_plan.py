"""Query plans that matter with a million tasks: the default task list (fleet runs' children left out) reads
the tasks newest first from an index, never every task through another index and a sort (that took 1.1 s,
docs/performance.md); the background passes read the small indexes of the tasks they can find."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from cloud.db.engine import Database, migrate
from cloud.db.types import utcnow
from cloud.hub import Hub
from cloud.services import fleet, retries, runs
from cloud.services.tasks import TaskFilter, list_tasks


def test_the_default_list_reads_the_created_index_in_order(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'cloud.db'}", Hub())
    try:
        migrate(db.engine)
        with db.transaction() as conn:
            seen: list[tuple[str, Any]] = []
            event.listen(conn, "before_cursor_execute", lambda *a: seen.append((a[2], a[3])))
            flt = TaskFilter(fleet=fleet.list_condition(None, None, by_agent=False))
            list_tasks(conn, flt, page=1, page_size=10)
            (page_sql, params), *_ = [(s, p) for s, p in seen if "ORDER BY" in s]
            plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + page_sql, params)]
    finally:
        db.dispose()
    assert "parent_id IS NULL" in page_sql
    assert plan == ["SCAN tasks USING INDEX ix_tasks_created"], plan


def test_the_background_passes_read_the_indexes_of_tasks_whose_time_is_set(tmp_path: Path) -> None:
    """Lapsed leases, expired deliveries and due retries each read its partial index (migration 0012: a task is
    in it only while that time is set), never every task."""
    db = Database(f"sqlite:///{tmp_path / 'cloud.db'}", Hub())
    now = utcnow()
    passes = {
        "ix_tasks_status_lease": lambda conn: runs.reap_expired(conn),
        "ix_tasks_status_expires": lambda conn: retries.expire_undelivered(conn, now),
        "ix_tasks_status_retry": lambda conn: retries.announce_due_retries(conn, now - timedelta(seconds=5), now),
    }
    plans = {}
    try:
        migrate(db.engine)
        for index, run in passes.items():
            with db.transaction() as conn:
                seen: list[tuple[str, Any]] = []
                event.listen(conn, "before_cursor_execute", lambda *a, seen=seen: seen.append((a[2], a[3])))
                run(conn)
                (sql, params), *_ = seen
                plans[index] = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
        with db.reading() as conn:
            partial = {row[1] for row in conn.exec_driver_sql("PRAGMA index_list(tasks)") if row[4]}
    finally:
        db.dispose()
    assert set(passes) <= partial
    for index, plan in plans.items():
        assert plan[0].startswith(f"SEARCH tasks USING INDEX {index} "), plans
