"""The task state machine: which status may follow which, and the one compare-and-set UPDATE that every
status change runs (claim, result, cancel, failure, retry), with the side effects of each change.

A change names the statuses it was decided in (`expect_from`) plus any column it relied on (`match`,
`lapsed`); the UPDATE applies only while the row still is so, and its row count says who won. A pair the
table does not allow is a programming error (IllegalTransition), refused before any SQL runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, Update, bindparam, func, or_, select, update

from cloud.db import events
from cloud.db.models import TASKS as T
from cloud.db.prepared import Prepared
from cloud.db.types import utcnow
from cloud.services.logs import system_line
from wire.tasks import LogLevel, TaskStatus

TaskRow = Any
"""A full row of the tasks table, from SQLAlchemy or a prepared statement (cloud.db.prepared); fields are read
as attributes (row.status) either way."""

_S = TaskStatus
FINAL = frozenset(s for s in _S if s.is_final)
ALLOWED: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    # Claimed; canceled before a claim; failed undelivered or with its agent deleted; an undelivered
    # task's automatic retry stays pending with a new expiry.
    _S.pending: frozenset({_S.running, _S.canceled, _S.failed, _S.pending}),
    # The agent's result; failed by the cloud (agent lost or deleted, not assignable); an automatic retry.
    _S.running: frozenset({_S.success, _S.failed, _S.timeout, _S.canceled, _S.pending}),
    # A final status changes only by a retry on request (POST /tasks/{id}/retry).
    **{s: frozenset({_S.pending}) for s in FINAL},
}
"""From-status -> the statuses it may change to."""


class IllegalTransition(ValueError):
    """A status change the table does not allow; a bug in the caller, never a caller's request."""


def check(expect_from: Iterable[TaskStatus], to: TaskStatus) -> None:
    """Raise IllegalTransition unless every `expect_from` -> `to` is in ALLOWED."""
    for src in expect_from:
        if to not in ALLOWED[src]:
            raise IllegalTransition(f"a task cannot go from {src.value} to {to.value}")


def _cas(to: TaskStatus, expect_from: tuple[TaskStatus, ...], *where: ColumnElement[bool]) -> Update:
    """UPDATE tasks SET status = to WHERE status IN expect_from AND where: the compare-and-set under
    every status change, refused here when the table does not allow it."""
    check(expect_from, to)
    # Equalities, not `IN`: an IN list is expanded anew at every execution, and these statements are
    # prepared once (cloud.db.prepared).
    status = or_(*(T.c.status == s.value for s in expect_from))
    return update(T).where(*where, status).values(status=to.value)


@lru_cache(maxsize=256)
def _statement(
    to: TaskStatus,
    expect_from: tuple[TaskStatus, ...],
    fields: tuple[str, ...],
    match: tuple[str, ...],
    lapsed: tuple[str, ...],
) -> Prepared:
    # Built once per shape and cached: statements on the per-task path cost more to build than to run.
    where = [T.c.id == bindparam("b_id")]
    where += [T.c[c] == bindparam(f"m_{c}", type_=T.c[c].type) for c in match]
    where += [T.c[c] < bindparam(f"l_{c}", type_=T.c[c].type) for c in lapsed]
    values = {c: bindparam(f"v_{c}", type_=T.c[c].type) for c in fields}
    return Prepared(_cas(to, expect_from, *where).values(**values).returning(*T.c))


def _end_fields(now: datetime) -> dict[str, Any]:
    """Columns every final status sets: the end time, and no lease, retry time or delivery expiry left."""
    return {"finished_at": now, "lease_expires_at": None, "next_retry_at": None, "expires_at": None}


def transition(
    conn: Connection,
    task_id: int,
    *,
    to: TaskStatus,
    expect_from: TaskStatus | Iterable[TaskStatus],
    match: Mapping[str, Any] | None = None,
    lapsed: Mapping[str, datetime] | None = None,
    line: str | None = None,
    level: LogLevel = LogLevel.info,
    now: datetime | None = None,
    **fields: Any,
) -> TaskRow | None:
    """Move task `task_id` to `to` if its status is in `expect_from`, each column of `match` equals its
    value and each column of `lapsed` is before its time; set `fields` too. The new row, or None when
    the task was not in that state (another change won). `line` goes into the attempt's log."""
    froms = (expect_from,) if isinstance(expect_from, TaskStatus) else tuple(expect_from)
    now = now or utcnow()
    values = {"updated_at": now, **(_end_fields(now) if to.is_final else {}), **fields}
    match, lapsed = match or {}, lapsed or {}
    stmt = _statement(to, froms, tuple(values), tuple(match), tuple(lapsed))
    params: dict[str, Any] = {"b_id": task_id}
    params |= {f"v_{c}": v for c, v in values.items()}
    params |= {f"m_{c}": v for c, v in match.items()}
    params |= {f"l_{c}": v for c, v in lapsed.items()}
    row = stmt.first(conn, params)
    if row is not None:
        _after(conn, row, line, level)
    return row


def _after(conn: Connection, row: TaskRow, line: str | None, level: LogLevel) -> None:
    """The side effects of a change: its log line, and the wake-ups of whoever waits on the task."""
    if line:
        system_line(conn, row, line, level)
    if TaskStatus(row.status).is_final:
        # The final row travels with the wake-up: a sync caller in this process need not read it back.
        events.publish(conn, f"task:{row.id}", payload=row)
        events.observe(conn, "task.finished", row)
        events.publish(conn, f"logs:{row.id}")
        if row.parent_id is not None:  # fleet runs: a child ended, its run may start the next (services/fleet.py)
            events.publish(conn, "fleet")
        return
    events.publish(conn, f"task:{row.id}", f"logs:{row.id}")
    if row.status == _S.pending.value and row.next_retry_at is None:
        events.publish(conn, f"agent:{row.agent_id}")  # claimable at once: wake its agent's claims


def fail(
    conn: Connection,
    task: TaskRow,
    error: str,
    *,
    expect_from: TaskStatus | Iterable[TaskStatus],
    match: Mapping[str, Any] | None = None,
    lapsed: Mapping[str, datetime] | None = None,
    line: str | None = None,
) -> TaskRow | None:
    """End `task` `failed` with `error` if it is still as the guards say: the failed row, or None when
    another change won. Its attempt's token goes: a late log or result of that attempt gets 409. One
    system line (`line`, else the error) says why."""
    return transition(
        conn,
        task.id,
        to=_S.failed,
        expect_from=expect_from,
        match=match,
        lapsed=lapsed,
        line=line or error,
        level=LogLevel.error,
        error=error,
        last_error=error,
        task_token=None,
    )


def fresh_attempt() -> dict[str, Any]:
    """Column values that make a task pending again with nothing of its previous attempt but the log."""
    return {
        "error": "",
        "result": "",
        "data": None,
        "exit_code": None,
        "task_token": None,
        "claimed_by": None,
        "lease_expires_at": None,
        "cancel_requested": False,
        "finished_at": None,
    }


_CLAIMABLE = (
    select(T.c.id)
    .where(
        T.c.agent_id == bindparam("b_agent_id"),
        T.c.status == _S.pending.value,
        # A retry waits out its backoff; an expired task is never handed out, even before the
        # background pass has failed it.
        or_(T.c.next_retry_at.is_(None), T.c.next_retry_at <= bindparam("b_now")),
        or_(T.c.expires_at.is_(None), T.c.expires_at > bindparam("b_now")),
    )
    .order_by(T.c.id)
    .limit(bindparam("b_capacity"))
    .with_for_update(skip_locked=True)
    # Chosen once, in a materialized CTE: as `id IN (subquery)`, PostgreSQL may run the LIMIT ... SKIP
    # LOCKED subquery again for rows a concurrent claim changed (its re-check of an updated row), each run
    # skipping other rows, and one claim of capacity 1 took every pending task of the agent.
    .cte("claimable")
    .prefix_with("MATERIALIZED")
)
_CLAIM = Prepared(
    _cas(_S.running, (_S.pending,), T.c.id.in_(select(_CLAIMABLE.c.id)))
    # One random prefix per claim plus the task number: unique and unguessable per task and attempt.
    .values(
        task_token=bindparam("b_token_prefix", type_=String) + func.cast(T.c.id, String),
        attempts=T.c.attempts + 1,
        next_seq=1,
        log_bytes=0,
        cancel_requested=False,
        started_at=bindparam("b_now"),
        updated_at=bindparam("b_now"),
        claimed_by=bindparam("b_claimer"),
        lease_expires_at=bindparam("b_lease_until"),
        next_retry_at=None,
        expires_at=None,
    )
    .returning(*T.c)
)


def claim(
    conn: Connection,
    agent_id: str,
    capacity: int,
    token_prefix: str,
    now: datetime,
    until: datetime,
    claimer: str,
) -> list[TaskRow]:
    """Pending -> running for up to `capacity` claimable tasks of `agent_id`, in one UPDATE; each gets
    its attempt's token (`token_prefix` + its number) and a lease until `until`."""
    params = {
        "b_agent_id": agent_id,
        "b_capacity": capacity,
        "b_token_prefix": token_prefix,
        "b_now": now,
        "b_claimer": claimer or None,
        "b_lease_until": until,
    }
    rows = _CLAIM.rows(conn, params)
    for row in rows:
        events.observe(conn, "task.claimed", row)
    if len(rows) == capacity:
        events.publish(conn, f"agent:{agent_id}")  # maybe more are pending: wake the next claimer
    return rows
