"""Retries and delivery expiry: when a failed attempt gets another one, the backoff before it, the
manual retry of a finished task, and the passes that expire undelivered tasks and wake agents whose
retry came due.

A retry puts the task back to `pending` (a status that is not final) with `next_retry_at`; a final status
is reached only when no retry is left. Every change is a compare-and-set on the state it was decided in.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select

from cloud.db import events
from cloud.db.models import TASKS as T
from cloud.db.types import utcnow
from cloud.services import transitions
from cloud.services.agents import AgentCache
from cloud.services.errors import Conflict
from cloud.services.tasks import PENDING, TaskRow, check_agent_for_retry, fetch
from wire.tasks import NOT_DELIVERED, POLICY_REFUSED, LogLevel, TaskStatus, format_task_id, is_lost

MAX_BACKOFF_SECONDS = 3600.0
EXPIRE_BATCH = 500
"""Undelivered tasks failed per pass at most; the next pass takes the rest."""

FAILED, TIMEOUT, CANCELED = TaskStatus.failed.value, TaskStatus.timeout.value, TaskStatus.canceled.value


def backoff_seconds(base: float, retries_used: int) -> float:
    """Exponential backoff with jitter: base * 2^n, then a random point in its upper half (so replicas
    and agents retrying together spread out), at most an hour."""
    full = min(MAX_BACKOFF_SECONDS, base * 2.0 ** min(retries_used, 30))
    return random.uniform(full / 2, full)


def retryable(task: Any, status: str, error: str) -> bool:
    """Whether an attempt that ended with `status` and `error` gets another one."""
    if task.retries >= task.max_retries or status == CANCELED or error.startswith(POLICY_REFUSED):
        return False
    if is_lost(error) or error.startswith(NOT_DELIVERED):
        return True
    return bool(task.retry_on == "any" and status in (FAILED, TIMEOUT))


def schedule_retry(
    conn: Connection,
    task: TaskRow,
    error: str,
    now: datetime,
    expect_from: TaskStatus,
    *,
    match: Mapping[str, Any] | None = None,
    lapsed: Mapping[str, datetime] | None = None,
) -> TaskRow | None:
    """Back to pending for attempt n+1 after the backoff, if the task is still as the guards say (the
    compare-and-set of the caller's decision); returns the new row, or None when it changed meanwhile.

    The token is cleared, so the old attempt's late lines and result get 409. The log line saying so goes
    into the ending attempt's log."""
    delay = backoff_seconds(task.retry_backoff, task.retries)
    at = now + timedelta(seconds=delay)
    row = transitions.transition(
        conn,
        task.id,
        to=TaskStatus.pending,
        expect_from=expect_from,
        # The retry count read with the decision is part of it: two deciders never both use one up.
        match={**(match or {}), "retries": task.retries},
        lapsed=lapsed,
        line=f"{error}; retry {task.retries + 1} of {task.max_retries} in {delay:.1f}s",
        level=LogLevel.warn,
        now=now,
        **transitions.fresh_attempt(),
        retries=task.retries + 1,
        last_error=error,
        next_retry_at=at,
        expires_at=_expiry(task, at),
    )
    return None if row is None else fetch(conn, task.id)


def _expiry(task: Any, start: datetime) -> datetime | None:
    return start + timedelta(seconds=task.expires_in) if task.expires_in else None


def retry_task(conn: Connection, task: TaskRow, *, agents: AgentCache, offline_after: float) -> TaskRow:
    """POST /tasks/{id}/retry: a new attempt of a finished task, at once, for the same agent, which must
    still exist, be online and run the type. It does not use up the task's automatic retries. 409 while
    the task is pending or running, or when its agent cannot take it."""
    if not TaskStatus(task.status).is_final:
        raise Conflict(f"task {format_task_id(task.id)} is {task.status}; only a finished task can be retried")
    check_agent_for_retry(conn, task, agents=agents, offline_after=offline_after)
    now = utcnow()
    row = transitions.transition(
        conn,
        task.id,
        to=TaskStatus.pending,
        expect_from=TaskStatus(task.status),
        match={"attempts": task.attempts},
        line=f"retried by request (was {task.status})",
        now=now,
        **transitions.fresh_attempt(),
        last_error=task.error or task.status,
        next_retry_at=None,
        expires_at=_expiry(task, now),
    )
    if row is None:
        raise Conflict(f"task {format_task_id(task.id)} changed meanwhile; read it and try again")
    return fetch(conn, task.id) or row


_EXPIRED = (
    select(T)
    .where(T.c.status == PENDING, T.c.expires_at < bindparam("b_now"))
    .order_by(T.c.expires_at)
    .limit(EXPIRE_BATCH)
)


def expire_undelivered(conn: Connection, now: datetime) -> int:
    """Pending tasks no agent claimed before `expires_at`: retried when they have retries left, else
    failed `not delivered`. The claim refuses them already, so none runs after its expiry."""
    ended = 0
    for task in conn.execute(_EXPIRED, {"b_now": now}).all():
        error = f"{NOT_DELIVERED}: agent {task.agent_id} did not claim it within {task.expires_in} s"
        lapsed = {"expires_at": now}
        if retryable(task, FAILED, error):
            schedule_retry(conn, task, error, now, TaskStatus.pending, lapsed=lapsed)
            continue
        ended += transitions.fail(conn, task, error, expect_from=TaskStatus.pending, lapsed=lapsed) is not None
    return ended


_DUE = (
    select(T.c.agent_id)
    .where(
        T.c.status == PENDING,
        T.c.next_retry_at > bindparam("b_since"),
        T.c.next_retry_at <= bindparam("b_now"),
    )
    .distinct()
)


def announce_due_retries(conn: Connection, since: datetime, now: datetime) -> int:
    """Wake the claims of agents with a retry that came due in (since, now]: nothing else would, since
    its task was already pending."""
    agents = conn.execute(_DUE, {"b_since": since, "b_now": now}).scalars().all()
    for agent_id in agents:
        events.publish(conn, f"agent:{agent_id}")
    return len(agents)
