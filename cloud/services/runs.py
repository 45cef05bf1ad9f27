"""The agent's side of the task state machine: claim, heartbeat, log batches, results, and the
reaper for attempts whose agent went silent. Each step is a compare-and-set on the attempt's
task_token, so a stale agent can never change a task it no longer owns.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, bindparam, select, update

from cloud.db import events
from cloud.db.batches import in_batches
from cloud.db.models import AGENTS as A
from cloud.db.models import TASKS as T
from cloud.db.prepared import Prepared
from cloud.db.types import utcnow
from cloud.sealing import Sealer, Unsealable
from cloud.services import output, present, transitions
from cloud.services.errors import Conflict, Forbidden, NotFound
from cloud.services.logs import store_lines
from cloud.services.retries import retryable, schedule_retry
from cloud.services.tasks import RUNNING, TaskRow, get_task
from wire.tasks import (
    AGENT_LOST,
    Assignment,
    LogLine,
    TaskReport,
    TaskStatus,
    format_task_id,
    parse_task_id,
)

_NEVER_RETRIED = (TaskStatus.success, TaskStatus.canceled)
"""Outcomes recorded in one statement; a failure or timeout first checks the task's retry policy."""
_TOUCH = Prepared(update(A).where(A.c.id == bindparam("b_agent_id")).values(last_seen_at=bindparam("b_now")))


def claim_tasks(
    conn: Connection,
    agent_id: str,
    capacity: int,
    lease_seconds: float,
    max_log_bytes: int,
    claimer: str = "",
    touch: bool = True,
    *,
    sealer: Sealer,
    rows: dict[int, TaskRow] | None = None,
) -> list[Assignment]:
    """Hand up to `capacity` pending tasks to one claim, in one compare-and-set UPDATE.

    Each task gets a fresh, unguessable task_token for this attempt and a lease. `touch` records the
    agent as seen (and checks it registered); a busy agent's claims may skip it for a while. `rows`, when
    given, gets each claimed task's row as the claim leaves it: running, or failed if it could not be
    handed out.
    """
    now = utcnow()
    if touch:
        _touch_registered(conn, agent_id)
    until = now + timedelta(seconds=lease_seconds)
    claimed = transitions.claim(conn, agent_id, capacity, secrets.token_hex(16) + "-", now, until, claimer)
    out = []
    for r in sorted(claimed, key=lambda r: r.id):
        try:
            assignment = present.assignment(r, sealer, max_log_bytes)
            out.append(assignment)
            # Its output is masked when stored: keep what that takes while the secrets are unsealed.
            output.remember(r.task_token, assignment.params, assignment.env, r.command)
        except (Unsealable, ValidationError) as exc:
            # One task that cannot be handed out fails on its own; it must not block the agent's queue.
            error = str(exc).splitlines()[0]
            guard = {"task_token": r.task_token}
            line = f"not assigned: {error}"
            # It cannot lose its compare-and-set: this transaction claimed the row a moment ago.
            r = transitions.fail(conn, r, error, expect_from=TaskStatus.running, match=guard, line=line) or r
        if rows is not None:
            rows[r.id] = r
    return out


def _touch_registered(conn: Connection, agent_id: str) -> None:
    if _TOUCH.execute(conn, {"b_agent_id": agent_id, "b_now": utcnow()}) != 1:
        raise NotFound(f"agent_id: agent {agent_id} is not registered; POST /api/v1/agents/register first")


def record_seen(conn: Connection, agent_ids: set[str]) -> None:
    """Record every agent in `agent_ids` as seen now (agents on channels, idle heartbeats; batched)."""
    now = utcnow()
    for ids in in_batches(sorted(agent_ids)):
        conn.execute(update(A).where(A.c.id.in_(ids)).values(last_seen_at=now))


def heartbeat(
    conn: Connection, agent_id: str, running: list[str], lease_seconds: float, tokens: dict[str, str] | None = None
) -> list[str]:
    """Renew the leases of the agent's running tasks; return the ids whose cancel was requested or that
    this process should no longer run. With `tokens` (id -> task_token) a lease is renewed only for the
    attempt the process holds: a stale process of a pool must not keep another process's attempt alive."""
    _touch_registered(conn, agent_id)
    ids, by_token = _parse_running(running, tokens)
    if not ids:
        return []
    until = utcnow() + timedelta(seconds=lease_seconds)
    plain = [n for n in ids if n not in by_token]
    if plain:
        conn.execute(
            update(T)
            .where(T.c.id.in_(plain), T.c.agent_id == agent_id, T.c.status == RUNNING)
            .values(lease_expires_at=until)
        )
    if by_token:
        conn.execute(
            update(T)
            .where(T.c.id == bindparam("b_id"), T.c.task_token == bindparam("b_token"), T.c.status == RUNNING)
            .values(lease_expires_at=bindparam("b_until")),
            [{"b_id": n, "b_token": t, "b_until": until} for n, t in by_token.items()],
        )
    return pending_cancels(conn, agent_id, ids, by_token)


def _parse_running(running: list[str], tokens: dict[str, str] | None) -> tuple[list[int], dict[int, str]]:
    """The task numbers a heartbeat lists (ids that are not task ids are skipped), and the attempt token
    it holds for each, where it said."""
    ids, by_token = [], {}
    for r in running:
        n = parse_task_id(r)
        if n is None:
            continue
        ids.append(n)
        if tokens and r in tokens:
            by_token[n] = tokens[r]
    return ids, by_token


def cancels_since(conn: Connection, agent_id: str, running: list[str], tokens: dict[str, str] | None) -> list[str]:
    """After a heartbeat waited for a cancel: the ids of its `running` the agent should stop now, and any
    other running task of the agent whose cancel was requested (started since the beat was sent)."""
    ids, by_token = _parse_running(running, tokens)
    return pending_cancels(conn, agent_id, ids, by_token) + requested_cancels(conn, agent_id, exclude=ids)


def pending_cancels(conn: Connection, agent_id: str, ids: list[int], tokens: dict[int, str] | None = None) -> list[str]:
    """Ids among `ids` the agent should stop: a cancel was requested, or the task no longer runs here
    (the reaper failed it while the agent was cut off, it was deleted, or, when the process said which
    attempt it holds, it is now in another attempt), so its work is unwanted."""
    rows = conn.execute(
        select(T.c.id, T.c.status, T.c.agent_id, T.c.cancel_requested, T.c.task_token).where(T.c.id.in_(ids))
    )
    tokens = tokens or {}
    keep = {
        r.id
        for r in rows
        if r.status == RUNNING
        and r.agent_id == agent_id
        and not r.cancel_requested
        and (r.id not in tokens or secrets.compare_digest(r.task_token or "", tokens[r.id]))
    }
    return [format_task_id(n) for n in ids if n not in keep]


def requested_cancels(conn: Connection, agent_id: str, exclude: list[int]) -> list[str]:
    """Ids of the agent's running tasks whose cancel was requested, other than `exclude` (the ones the
    agent listed, already answered by pending_cancels)."""
    rows = conn.execute(
        select(T.c.id).where(T.c.agent_id == agent_id, T.c.status == RUNNING, T.c.cancel_requested.is_(True))
    )
    skip = set(exclude)
    return [format_task_id(r.id) for r in rows if r.id not in skip]


def append_logs(
    conn: Connection,
    task_id: str,
    token: str,
    lines: list[LogLine],
    max_log_bytes: int | None = None,
    *,
    agent_id: str | None = None,
) -> int:
    """Store a batch of lines of the current attempt; returns the next seq expected.

    A repeated seq is ignored (the agent resent it); a gap is refused with 409 and the next expected
    seq so the agent resends from there. Lines past `max_log_bytes` of the attempt's log are dropped
    (see store_lines). The lines come cleaned (cloud.services.output). With `agent_id` (the agent token's),
    another agent's task is Forbidden.
    """
    task = _task_for_agent(conn, task_id, token, agent_id)
    if task.status != RUNNING:
        if any(ln.last_seq >= task.next_seq for ln in lines):
            # No next_seq: resending cannot help, so the agent stops shipping this attempt.
            raise Conflict(f"task {task_id} is {task.status}; no more log lines accepted")
        return int(task.next_seq)
    next_seq = store_lines(conn, task, lines, max_log_bytes)
    events.publish(conn, f"logs:{task.id}")
    return next_seq


def _task_for_agent(conn: Connection, task_id: str, token: str, agent_id: str | None = None) -> TaskRow:
    task = get_task(conn, task_id)
    _check_owner(task, agent_id)
    if not token or not secrets.compare_digest(task.task_token or "", token):
        raise Conflict(f"task_token: stale or unknown token for {task_id}; this attempt no longer owns it")
    return task


def _check_owner(task: TaskRow, agent_id: str | None) -> None:
    if agent_id is not None and task.agent_id != agent_id:
        task_id = format_task_id(task.id)
        raise Forbidden(f"{task_id} belongs to agent {task.agent_id!r}, not to this token's {agent_id!r}")


def report_result(
    conn: Connection,
    task_id: str,
    report: TaskReport,
    max_log_bytes: int | None = None,
    *,
    agent_id: str | None = None,
) -> TaskRow:
    """Record the attempt's outcome (idempotent for the same report); 409 if stale or log incomplete.

    The usual case (every line already shipped, token current) is one compare-and-set UPDATE; the
    reads that explain a refusal happen only when it matches nothing. The report comes cleaned
    (cloud.services.output); its lines are capped like a log batch's.
    """
    n = parse_task_id(task_id)
    if n is not None and not report.lines and report.status in _NEVER_RETRIED:
        row = _finish(conn, n, report, next_seq=report.log_lines + 1)
        if row is not None:
            _check_owner(row, agent_id)  # raising rolls the change back with the transaction
            output.forget(report.task_token)
            return row
    task = _task_for_agent(conn, task_id, report.task_token, agent_id)
    if TaskStatus(task.status).is_final:
        if task.status == report.status.value:
            return task  # a resend of a result we already stored
        raise Conflict(f"task {task_id} already finished ({task.status})")
    next_seq = store_lines(conn, task, report.lines, max_log_bytes)
    if next_seq - 1 != report.log_lines:
        raise Conflict(
            f"log_lines: the cloud has {next_seq - 1} of {report.log_lines} lines; resend the rest",
            next_seq=task.next_seq,  # the lines of this request are rolled back with it
        )
    error = report.error or f"{report.status.value} (exit code {report.exit_code})"
    if retryable(task, report.status.value, error):
        row = schedule_retry(conn, task, error, utcnow(), TaskStatus.running, match={"task_token": report.task_token})
    else:
        row = _finish(conn, task.id, report, next_seq)
    if row is None:
        raise Conflict(f"task {task_id} changed while the result was stored; it is no longer running")
    output.forget(report.task_token)
    return row


def _finish(conn: Connection, n: int, report: TaskReport, next_seq: int) -> TaskRow | None:
    """The compare-and-set to the final status, with the whole log stored (next_seq); None when the task
    is not in the expected state."""
    return transitions.transition(
        conn,
        n,
        to=report.status,
        expect_from=TaskStatus.running,
        match={"task_token": report.task_token, "next_seq": next_seq},
        exit_code=report.exit_code,
        result=report.result,
        data=report.data,
        error=report.error,
    )


def reap_expired(conn: Connection) -> int:
    """Running tasks whose lease expired (their agent stopped heartbeating): retried when they have
    retries left, else failed `agent lost`. Returns how many were handled."""
    now = utcnow()
    expired = conn.execute(select(T).where(T.c.status == RUNNING, T.c.lease_expires_at < now)).all()
    reaped = 0
    for task in expired:
        guard: dict[str, Any] = {"match": {"task_token": task.task_token}, "lapsed": {"lease_expires_at": now}}
        line = f"{AGENT_LOST}: no heartbeat before the lease expired"
        if retryable(task, TaskStatus.failed.value, AGENT_LOST):
            reaped += schedule_retry(conn, task, line, now, TaskStatus.running, **guard) is not None
            continue
        # The token is cleared, as for a retry: the lost attempt's late log and result (whatever its
        # status) get 409, rather than passing for a resend of an outcome the cloud stored itself.
        reaped += (
            transitions.fail(conn, task, AGENT_LOST, expect_from=TaskStatus.running, line=line, **guard) is not None
        )
    return reaped
