"""Retention through the real service functions on real SQLite and PostgreSQL: finished tasks past the
retention period go with their log lines, in batches that never pass their bound; recent and unfinished
tasks stay."""

from __future__ import annotations

from datetime import timedelta

from cryptography.fernet import Fernet
from sqlalchemy import text

from cloud.background import retention_pass
from cloud.db.engine import Database
from cloud.db.types import utcnow
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache
from cloud.services.retention import cutoff, prune_batch
from cloud.services.runs import claim_tasks, report_result
from cloud.services.tasks import create_task
from wire.tasks import LogLine, LogStream, TaskCreate, TaskReport, TaskStatus

SEALER = Sealer([Fernet.generate_key()])


def created(db: Database, request_id: str | None = None) -> int:
    """A new pending task of agent a1; its number."""
    with db.transaction() as conn:
        req = TaskCreate(agent_id="a1", type="shell", command="true", request_id=request_id)
        row, _ = create_task(conn, req, agents=AgentCache(), offline_after=60, sealer=SEALER)
    return int(row.id)


def claimed(db: Database, request_id: str | None = None) -> tuple[int, str]:
    """A new task, claimed by a1 (running): its number and attempt token."""
    created(db, request_id)
    with db.transaction() as conn:
        [task] = claim_tasks(conn, "a1", 1, lease_seconds=30, max_log_bytes=1 << 20, sealer=SEALER)
    return int(task.id.removeprefix("task-")), task.task_token


def finished(
    db: Database, lines: int = 3, status: TaskStatus = TaskStatus.success, request_id: str | None = None
) -> int:
    """A task that ran and ended `status` with `lines` log lines, a log row each."""
    n, token = claimed(db, request_id)
    # Streams alternate so that each line is a log row of its own (a run holds one stream's lines).
    streams = (LogStream.stdout, LogStream.stderr)
    logged = [LogLine(seq=i, message=f"line {i}", stream=streams[i % 2]) for i in range(1, lines + 1)]
    body = TaskReport(task_token=token, status=status, exit_code=0, log_lines=lines, lines=logged)
    with db.transaction() as conn:
        report_result(conn, f"task-{n}", body)
    return n


def age(db: Database, ids: list[int], days: float) -> None:
    """Move the tasks' creation and end `days` into the past, as if they had run then."""
    then = (utcnow() - timedelta(days=days)).replace(tzinfo=None)  # naive UTC, as UTCDateTime stores it
    with db.engine.begin() as conn:
        for n in ids:
            # finished_at only where the task has ended: a pending or running task has none.
            ended = "CASE WHEN finished_at IS NULL THEN NULL ELSE :t END"
            conn.execute(
                text(f"UPDATE tasks SET created_at = :t, finished_at = {ended} WHERE id = :n"), {"t": then, "n": n}
            )


def tasks_left(db: Database) -> set[int]:
    with db.engine.connect() as conn:
        return {r[0] for r in conn.execute(text("SELECT id FROM tasks"))}


def log_rows_of(db: Database, ids: list[int]) -> int:
    with db.engine.connect() as conn:
        marks = ",".join(str(n) for n in ids)
        return int(conn.execute(text(f"SELECT count(*) FROM task_logs WHERE task_id IN ({marks})")).scalar_one())


def test_old_finished_tasks_go_with_their_logs_and_the_rest_stays(db: Database) -> None:
    old = [finished(db), finished(db, status=TaskStatus.failed), finished(db, status=TaskStatus.canceled)]
    recent = finished(db)
    old_running, _ = claimed(db)
    old_pending = created(db)  # after the claim, which takes the oldest pending task
    age(db, [*old, old_pending, old_running], days=40)
    assert log_rows_of(db, old) > 0

    pruned = retention_pass(db, days=30, batch=100)

    assert (pruned.tasks, pruned.log_rows) == (3, 3 * 3)
    assert tasks_left(db) == {recent, old_pending, old_running}
    assert log_rows_of(db, old) == 0
    assert log_rows_of(db, [recent]) == 3


def test_a_task_created_long_ago_that_ended_recently_is_kept(db: Database) -> None:
    n = finished(db)
    then = (utcnow() - timedelta(days=40)).replace(tzinfo=None)
    with db.engine.begin() as conn:  # e.g. retried on request long after it was first created
        conn.execute(text("UPDATE tasks SET created_at = :t WHERE id = :n"), {"t": then, "n": n})
    assert retention_pass(db, days=30, batch=100).tasks == 0
    assert n in tasks_left(db)


def test_each_batch_deletes_at_most_its_bound_of_tasks_and_of_log_rows(db: Database) -> None:
    long_log = finished(db, lines=7)
    short = [finished(db, lines=1) for _ in range(4)]
    age(db, [long_log, *short], days=40)
    before = cutoff(30)
    steps = []
    for _ in range(20):
        with db.transaction() as conn:
            step = prune_batch(conn, before, batch=3)
        steps.append((step.tasks, step.log_rows))
        if not step.more:
            break
    assert all(tasks <= 3 and lines <= 3 for tasks, lines in steps), steps
    # The long log goes in three batches, and its task only after its last line.
    assert steps[:3] == [(0, 3), (0, 3), (0, 3)], steps
    assert sum(t for t, _ in steps) == 5 and sum(n for _, n in steps) == 11
    assert tasks_left(db) == set()


def test_an_idempotency_key_is_remembered_as_long_as_its_task(db: Database) -> None:
    first = finished(db, request_id="deploy-7")
    assert created(db, request_id="deploy-7") == first
    age(db, [first], days=40)
    assert retention_pass(db, days=30, batch=10).tasks == 1
    assert created(db, request_id="deploy-7") != first  # the key is free again: a new task
