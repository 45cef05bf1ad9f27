"""bench/bigdb.py's fill writes rows the cloud reads as its own, and its ratios are full over small."""

from __future__ import annotations

from pathlib import Path

from bench.bigdb import ratios
from bench.bigdb_fill import fill
from cloud.db.engine import Database
from cloud.hub import Hub
from cloud.services.tasks import TaskFilter, get_task, list_tasks
from wire.tasks import TaskStatus


def test_filled_tasks_are_read_by_the_cloud_services(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    assert fill(url, 300)["log_lines"] == 90
    db = Database(url, Hub())
    try:
        with db.transaction() as conn:
            page = list_tasks(conn, TaskFilter(status=TaskStatus.success), 1, 10)
            newest = get_task(conn, "task-300")
    finally:
        db.dispose()
    assert 200 < page.total < 300 and page.total_exact
    assert [r.id for r in page.rows] == sorted((r.id for r in page.rows), reverse=True)
    assert newest.status in {"success", "failed", "timeout", "canceled"} and newest.finished_at is not None


def test_ratios_are_full_over_small_against_the_target() -> None:
    small = {"create": {"p50": 2.0, "p95": 4.0}, "list": {"p50": 2.0, "p95": 4.0}}
    full = {"create": {"p50": 2.2, "p95": 4.0}, "list": {"p50": 3.0, "p95": 8.0}}
    assert ratios(small, full) == {
        "create": {"p50": 1.1, "p95": 1.0, "target": "met"},
        "list": {"p50": 1.5, "p95": 2.0, "target": "not met"},
    }
