"""The default task list (fleet runs' children left out) reads the tasks newest first from an index, never
every task through another index and a sort: that took 1.1 s with a million tasks (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from cloud.db.engine import Database, migrate
from cloud.hub import Hub
from cloud.services import fleet
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
