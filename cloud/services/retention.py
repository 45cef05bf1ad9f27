"""Retention: finished tasks that ended more than retention_days ago are deleted with their log lines, in
small batches, oldest first. Pending and running tasks are never touched.

What goes with a task: its log lines (task_logs) and its idempotency key (the task's own request_id
column: a key is remembered as long as its task is kept). What stays: audit records naming it (kept
audit_retention_days, on their own schedule) and files it used (they belong to whoever uploaded them).

A batch is one short transaction that deletes at most `batch` log rows (each a run of lines, see
cloud.db.models.LogEntry), or, once a batch's tasks have no rows left, at most `batch` tasks: a task
with a long log takes several batches, and its lines always go before the task, so a pass cut short (a
crash, a restart) leaves nothing unreachable behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select

from cloud.db.models import TASK_LOGS as L
from cloud.db.models import TASKS as T
from cloud.db.types import utcnow
from wire.tasks import TaskStatus

FINAL = [s.value for s in TaskStatus if s.is_final]


@dataclass
class Pruned:
    """What one batch deleted, and whether the next batch may find more."""

    tasks: int = 0
    log_rows: int = 0
    more: bool = False


def cutoff(days: int) -> datetime:
    """Tasks that ended before this are past retention."""
    return utcnow() - timedelta(days=days)


def prune_batch(conn: Connection, before: datetime, batch: int) -> Pruned:
    """One bounded step: up to `batch` of the oldest tasks that finished before `before` lose up to
    `batch` log rows; when they have none left, the tasks themselves go."""
    # created_at is never later than finished_at: the (created_at, id) index reads the oldest first,
    # and a task created long ago that finished recently (retried on request) is kept by finished_at.
    ids = list(
        conn.execute(
            select(T.c.id)
            .where(T.c.created_at < before, T.c.finished_at < before, T.c.status.in_(FINAL))
            .order_by(T.c.created_at, T.c.id)
            .limit(batch)
        ).scalars()
    )
    if not ids:
        return Pruned()
    rows = select(L.c.id).where(L.c.task_id.in_(ids)).limit(batch)
    gone = conn.execute(delete(L).where(L.c.id.in_(rows.scalar_subquery()))).rowcount
    if gone >= batch:
        return Pruned(log_rows=gone, more=True)  # maybe more lines: the tasks go in a later batch
    # The status guard again: a task retried on request since the select must not go.
    tasks = conn.execute(delete(T).where(T.c.id.in_(ids), T.c.status.in_(FINAL))).rowcount
    return Pruned(tasks=tasks, log_rows=gone, more=len(ids) >= batch)
