"""The lease reaper against results, through the real service functions on real SQLite and PostgreSQL:
a task that just succeeded is never reaped, and a reaped attempt's late result is refused whatever
its status, while a resend of an accepted result stays idempotent."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from cloud.background import run_pass
from cloud.db.engine import Database
from cloud.db.types import utcnow
from cloud.services.errors import Conflict
from cloud.services.runs import reap_expired, report_result
from cloud.services.tasks import get_task
from tests.unit.cloud.factory import claim_one, queue_shell
from wire.tasks import Assignment, TaskReport, TaskStatus


def claimed(db: Database, **fields: Any) -> Assignment:
    """A new task for agent a1, claimed by it; its lease has already run out (the agent went silent)."""
    queue_shell(db, **fields)
    task = claim_one(db)
    with db.transaction() as conn:
        n = int(task.id.removeprefix("task-"))
        conn.execute(text("UPDATE tasks SET lease_expires_at = :t WHERE id = :n"), {"t": _past(), "n": n})
    return task


def _past() -> Any:
    # Naive UTC, as UTCDateTime stores it: the raw UPDATE bypasses the column type.
    return (utcnow() - timedelta(seconds=5)).replace(tzinfo=None)


def report(db: Database, task: Assignment, status: TaskStatus = TaskStatus.success) -> str:
    """The attempt's result as the agent sends it; the task's status afterwards."""
    body = TaskReport(task_token=task.task_token, status=status, exit_code=0 if status == "success" else 1)
    with db.transaction() as conn:
        return str(report_result(conn, task.id, body).status)


def status(db: Database, task: Assignment) -> tuple[str, str]:
    with db.transaction() as conn:
        row = get_task(conn, task.id)
    return row.status, row.error


def test_a_success_reported_before_the_reaper_pass_is_not_reaped(db: Database) -> None:
    task = claimed(db)
    assert report(db, task) == "success"
    with db.transaction() as conn:
        assert reap_expired(conn) == 0
    run_pass(db, 1)  # the whole background pass, as a replica runs it
    assert status(db, task) == ("success", "")


def test_a_success_committed_between_the_reapers_read_and_its_update_is_not_reaped(db: Database) -> None:
    """The reaper has read the expired row; the result commits before the reaper's compare-and-set."""
    task = claimed(db)
    interleaved: list[str] = []
    with db.transaction() as conn:

        def result_first(_c: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE TASKS") and not interleaved:
                interleaved.append(report(db, task))  # in another transaction, committed

        event.listen(conn, "before_cursor_execute", result_first)
        assert reap_expired(conn) == 0
    assert interleaved == ["success"]
    assert status(db, task) == ("success", "")


@pytest.mark.parametrize("late", [TaskStatus.success, TaskStatus.failed])
def test_a_result_after_the_reaper_failed_the_task_is_refused(db: Database, late: TaskStatus) -> None:
    """Regression: a late `failed` once matched the reaper's own `failed` and passed for a resend (200)."""
    task = claimed(db)
    with db.transaction() as conn:
        assert reap_expired(conn) == 1
    with pytest.raises(Conflict, match="stale or unknown token"):
        report(db, task, late)
    assert status(db, task) == ("failed", "agent lost")


def test_a_result_after_the_reaper_scheduled_a_retry_is_refused(db: Database) -> None:
    task = claimed(db, max_retries=1, retry_backoff=60)
    with db.transaction() as conn:
        assert reap_expired(conn) == 1
    with pytest.raises(Conflict, match="stale or unknown token"):
        report(db, task, TaskStatus.failed)
    assert status(db, task)[0] == "pending"


@pytest.mark.parametrize("outcome", [TaskStatus.success, TaskStatus.failed])
def test_a_resend_of_the_accepted_result_stays_idempotent(db: Database, outcome: TaskStatus) -> None:
    task = claimed(db)
    assert report(db, task, outcome) == outcome.value
    assert report(db, task, outcome) == outcome.value  # the agent did not hear the first answer
    with pytest.raises(Conflict, match="already finished"):
        report(db, task, TaskStatus.canceled)
    with db.transaction() as conn:
        assert reap_expired(conn) == 0
    assert status(db, task)[0] == outcome.value
