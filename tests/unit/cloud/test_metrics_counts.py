"""GET /metrics' `tiangong_tasks{status,type}`: pending and running tasks are counted at every scrape, the
finished ones at most every `metrics_final_counts_seconds` (a count over a million rows cost 0.66 s)."""

from __future__ import annotations

from cloud.db.engine import Database
from cloud.metrics import Metrics
from cloud.services.runs import report_result
from tests.unit.cloud.factory import claim_one, queue_shell
from wire.tasks import TaskReport, TaskStatus


def tasks_gauge(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["status"]: s.value
        for family in metrics.registry.collect()
        if family.name == "tiangong_tasks"
        for s in family.samples
    }


def walk(db: Database, metrics: Metrics) -> list[dict[str, float]]:
    """Scrapes after a create, a claim and a success of one `shell` task of agent a1."""
    seen = []
    queue_shell(db)
    seen.append(tasks_gauge(metrics))
    got = claim_one(db)
    seen.append(tasks_gauge(metrics))
    report = TaskReport(task_token=got.task_token, status=TaskStatus.success, exit_code=0)
    with db.transaction() as conn:
        report_result(conn, got.id, report)
    seen.append(tasks_gauge(metrics))
    return seen


def test_active_tasks_are_counted_at_every_scrape_and_finished_ones_when_due(db: Database) -> None:
    metrics = Metrics(db, offline_after=60, final_counts_seconds=3600)
    created, claimed, finished = walk(db, metrics)
    assert created == {"pending": 1}
    assert claimed == {"running": 1}
    assert finished == {}  # the finished count is the first scrape's (none) until an hour has passed


def test_with_no_interval_every_scrape_counts_the_finished_tasks_too(db: Database) -> None:
    metrics = Metrics(db, offline_after=60, final_counts_seconds=0)
    assert walk(db, metrics)[-1] == {"success": 1}
