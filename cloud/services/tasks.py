"""The task state machine: create, claim, log, report, cancel, reap. Every status change is one
compare-and-set UPDATE whose row count is checked, so concurrent callers can never both win.

Everything is SQLAlchemy Core on one Connection: the ORM's unit of work cost more than the
SQL itself (measured in bench/roundtrip.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, String, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.db.models import AGENTS, TASK_LOGS, TASKS
from cloud.db.types import utcnow
from cloud.services import events
from cloud.services.agents import AgentCache, is_online
from cloud.services.errors import BadRequest, Conflict, NotFound
from executors.registry import UnknownTaskType, default_exec_timeout, get_executor
from wire.tasks import (
    Assignment,
    LogLevel,
    LogLine,
    LogStream,
    TaskCreate,
    TaskReport,
    TaskRequest,
    TaskStatus,
    format_task_id,
    parse_task_id,
)

T, L, A = TASKS, TASK_LOGS, AGENTS
TaskRow = Row[Any]
"""A full row of the tasks table; fields are read as attributes (row.status)."""

_DEFAULT_LEVEL = {LogStream.stdout: LogLevel.info, LogStream.stderr: LogLevel.warn}
_RUNNING, _PENDING = TaskStatus.running.value, TaskStatus.pending.value


# Statements on the per-task path are built once: building them cost more than running them.
_BY_ID = select(T).where(T.c.id == bindparam("n"))
_CLAIM = (
    update(T)
    .where(
        T.c.id.in_(
            select(T.c.id)
            .where(T.c.agent_id == bindparam("b_agent_id"), T.c.status == _PENDING)
            .order_by(T.c.id)
            .limit(bindparam("b_capacity"))
            .with_for_update(skip_locked=True)
        ),
        T.c.status == _PENDING,
    )
    # One random prefix per claim plus the task number: unique and unguessable per task and attempt.
    .values(
        status=_RUNNING,
        task_token=bindparam("b_token_prefix", type_=String) + func.cast(T.c.id, String),
        attempts=T.c.attempts + 1,
        next_seq=1,
        cancel_requested=False,
        started_at=bindparam("b_now"),
        updated_at=bindparam("b_now"),
        claimed_by=bindparam("b_claimer"),
        lease_expires_at=bindparam("b_lease_until"),
    )
    .returning(*T.c)
)
_FINISH = (
    update(T)
    .where(
        T.c.id == bindparam("n"),
        T.c.status == _RUNNING,
        T.c.task_token == bindparam("b_token"),
        T.c.next_seq == bindparam("b_next_seq"),  # the whole log is stored
    )
    .values(
        status=bindparam("b_status"),
        exit_code=bindparam("b_exit_code"),
        result=bindparam("b_result"),
        data=bindparam("b_data", type_=T.c.data.type),
        error=bindparam("b_error"),
        finished_at=bindparam("b_now"),
        updated_at=bindparam("b_now"),
        lease_expires_at=None,
    )
    .returning(*T.c)
)
_INSERT = insert(T).returning(*T.c)
_BY_REQUEST_ID = select(T).where(T.c.request_id == bindparam("b_request_id"))
_TOUCH = update(A).where(A.c.id == bindparam("b_agent_id")).values(last_seen_at=bindparam("b_now"))


def _fetch(conn: Connection, n: int) -> TaskRow | None:
    return conn.execute(_BY_ID, {"n": n}).first()


def validate_request(req: TaskRequest) -> None:
    """Ask the type's executor to check command/params; raise BadRequest naming the field."""
    try:
        get_executor(req.type).validate(req)
    except (UnknownTaskType, ValueError) as exc:
        raise BadRequest(str(exc)) from exc


def create_task(conn: Connection, req: TaskCreate, *, agents: AgentCache, offline_after: float) -> tuple[TaskRow, bool]:
    """Queue a task; returns (task, created). A known request_id returns the existing task."""
    if req.request_id:
        existing = conn.execute(_BY_REQUEST_ID, {"b_request_id": req.request_id}).first()
        if existing is not None:
            return existing, False
    validate_request(req)
    agent = agents.get(conn, req.agent_id)
    if agent is None:
        raise NotFound(f"agent_id: agent not found: {req.agent_id}")
    _check_agent_can_run(agent, req.type, offline_after)
    now = utcnow()
    values = {
        "agent_id": req.agent_id,
        "type": req.type,
        "status": _PENDING,
        "command": req.command,
        "params": req.params,
        "env": req.env,
        "file_id": req.file_id,
        "exec_timeout": req.exec_timeout or default_exec_timeout(req.type),
        "result": "",
        "data": None,
        "error": "",
        "attempts": 0,
        "max_retries": 0,
        "last_error": "",
        "request_id": req.request_id,
        "next_seq": 1,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
    }
    if not req.request_id:
        row = conn.execute(_INSERT, values).one()
    else:
        try:
            with conn.begin_nested():
                row = conn.execute(_INSERT, values).one()
        except IntegrityError:
            # Another request with the same request_id won the insert first.
            existing = conn.execute(_BY_REQUEST_ID, {"b_request_id": req.request_id}).first()
            if existing is None:
                raise
            return existing, False
    events.publish(conn, f"agent:{req.agent_id}")
    return row, True


def _check_agent_can_run(agent: Any, type_name: str, offline_after: float) -> None:
    if not is_online(agent.last_seen_at, offline_after):
        seen = agent.last_seen_at.isoformat() if agent.last_seen_at else "never"
        raise Conflict(f"agent_id: agent {agent.id} is offline (last seen {seen})")
    if agent.executors and type_name not in agent.executors:
        raise Conflict(f"type: agent {agent.id} cannot run {type_name!r} tasks; it has: {', '.join(agent.executors)}")


def get_task(conn: Connection, task_id: str) -> TaskRow:
    """The task named `task-<n>` (or `<n>`), or NotFound."""
    n = parse_task_id(task_id)
    row = _fetch(conn, n) if n is not None else None
    if row is None:
        raise NotFound(f"task not found: {task_id}")
    return row


def get_task_by_number(conn: Connection, n: int) -> TaskRow | None:
    return _fetch(conn, n)


@dataclass
class TaskFilter:
    agent_id: str | None = None
    type: str | None = None
    status: TaskStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None


def list_tasks(conn: Connection, flt: TaskFilter, page: int, page_size: int) -> tuple[list[TaskRow], int]:
    """One page of tasks, newest first, and the total matching the filter."""
    conds: list[Any] = []
    if flt.agent_id:
        conds.append(T.c.agent_id == flt.agent_id)
    if flt.type:
        conds.append(T.c.type == flt.type)
    if flt.status:
        conds.append(T.c.status == flt.status.value)
    if flt.since:
        conds.append(T.c.created_at >= flt.since)
    if flt.until:
        conds.append(T.c.created_at < flt.until)
    if flt.q:
        conds.append(T.c.command.contains(flt.q, autoescape=True))
    total = conn.execute(select(func.count()).select_from(T).where(*conds)).scalar_one()
    rows = conn.execute(
        select(T).where(*conds).order_by(T.c.id.desc()).offset((page - 1) * page_size).limit(page_size)
    ).all()
    return list(rows), int(total)


def cancel_task(conn: Connection, task: TaskRow) -> TaskRow:
    """Cancel a pending task at once; ask the agent to stop a running one. 409 when already final."""
    now = utcnow()
    if task.status == _PENDING:
        message = "canceled before an agent claimed it"
        res = conn.execute(
            update(T)
            .where(T.c.id == task.id, T.c.status == _PENDING)
            .values(status=TaskStatus.canceled.value, error=message, finished_at=now, updated_at=now)
        )
        if res.rowcount == 1:
            _system_line(conn, task.id, message, LogLevel.warn)
            events.publish(conn, f"task:{task.id}", f"logs:{task.id}")
            return _fetch(conn, task.id) or task
        task = _fetch(conn, task.id) or task  # claimed meanwhile: stop it as a running task
    if task.status == _RUNNING:
        conn.execute(
            update(T).where(T.c.id == task.id, T.c.status == _RUNNING).values(cancel_requested=True, updated_at=now)
        )
        events.publish(conn, f"cancel:{task.agent_id}")
        return _fetch(conn, task.id) or task
    raise Conflict(f"task {format_task_id(task.id)} already finished ({task.status})")


def delete_task(conn: Connection, task: TaskRow) -> None:
    """Delete a finished task and its log; 409 while it is pending or running."""
    if not TaskStatus(task.status).is_final:
        raise Conflict(f"task {format_task_id(task.id)} is {task.status}; cancel it first")
    conn.execute(delete(L).where(L.c.task_id == task.id))
    conn.execute(delete(T).where(T.c.id == task.id))


def claim_tasks(
    conn: Connection,
    agent_id: str,
    capacity: int,
    lease_seconds: float,
    max_log_bytes: int,
    claimer: str = "",
    touch: bool = True,
) -> list[Assignment]:
    """Hand up to `capacity` pending tasks to one claim, in one compare-and-set UPDATE.

    Each task gets a fresh, unguessable task_token for this attempt and a lease. `touch` records the
    agent as seen (and checks it registered); a busy agent's claims may skip it for a while.
    """
    now = utcnow()
    if touch:
        _touch_registered(conn, agent_id)
    params = {
        "b_agent_id": agent_id,
        "b_capacity": capacity,
        "b_token_prefix": secrets.token_hex(16) + "-",
        "b_now": now,
        "b_claimer": claimer or None,
        "b_lease_until": now + timedelta(seconds=lease_seconds),
    }
    rows = conn.execute(_CLAIM, params).all()
    if len(rows) == capacity:
        events.publish(conn, f"agent:{agent_id}")  # maybe more are pending: wake the next claimer
    return [
        Assignment(
            id=format_task_id(r.id),
            type=r.type,
            command=r.command,
            params=r.params,
            file_id=r.file_id,
            env=r.env,
            exec_timeout=r.exec_timeout,
            attempt=r.attempts,
            task_token=r.task_token,
            max_log_bytes=max_log_bytes,
        )
        for r in sorted(rows, key=lambda r: r.id)
    ]


def _touch_registered(conn: Connection, agent_id: str) -> None:
    res = conn.execute(_TOUCH, {"b_agent_id": agent_id, "b_now": utcnow()})
    if res.rowcount != 1:
        raise NotFound(f"agent_id: agent {agent_id} is not registered; POST /api/v1/agents/register first")


def heartbeat(conn: Connection, agent_id: str, running: list[str], lease_seconds: float) -> list[str]:
    """Renew the leases of the agent's running tasks; return the ids whose cancel was requested."""
    _touch_registered(conn, agent_id)
    ids = [n for n in (parse_task_id(r) for r in running) if n is not None]
    if not ids:
        return []
    conn.execute(
        update(T)
        .where(T.c.id.in_(ids), T.c.agent_id == agent_id, T.c.status == _RUNNING)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
    )
    return pending_cancels(conn, agent_id, ids)


def pending_cancels(conn: Connection, agent_id: str, ids: list[int]) -> list[str]:
    """Ids among `ids` that are running on this agent with a cancel requested."""
    rows = conn.execute(
        select(T.c.id).where(
            T.c.id.in_(ids), T.c.agent_id == agent_id, T.c.status == _RUNNING, T.c.cancel_requested.is_(True)
        )
    ).scalars()
    return [format_task_id(n) for n in rows]


def append_logs(conn: Connection, task_id: str, token: str, lines: list[LogLine]) -> int:
    """Store a batch of lines of the current attempt; returns the next seq expected.

    A repeated seq is ignored (the agent resent it); a gap is refused with 409 and the next expected
    seq so the agent resends from there.
    """
    task = _task_for_agent(conn, task_id, token)
    if task.status != _RUNNING:
        if any(ln.seq >= task.next_seq for ln in lines):
            raise Conflict(f"task {task_id} is {task.status}; no more log lines accepted", next_seq=task.next_seq)
        return int(task.next_seq)
    next_seq = _store_lines(conn, task, lines)
    events.publish(conn, f"logs:{task.id}")
    return next_seq


def _task_for_agent(conn: Connection, task_id: str, token: str) -> TaskRow:
    task = get_task(conn, task_id)
    if not token or not secrets.compare_digest(task.task_token or "", token):
        raise Conflict(f"task_token: stale or unknown token for {task_id}; this attempt no longer owns it")
    return task


def _store_lines(conn: Connection, task: TaskRow, lines: list[LogLine]) -> int:
    expected = int(task.next_seq)
    fresh = sorted((ln for ln in lines if ln.seq >= expected), key=lambda ln: ln.seq)
    if not fresh:
        return expected
    for i, line in enumerate(fresh):
        if line.seq != expected + i:
            raise Conflict(f"lines: log gap, expected seq {expected + i} but got {line.seq}", next_seq=expected + i)
    now = utcnow()
    conn.execute(
        insert(L),
        [
            {
                "task_id": task.id,
                "attempt": task.attempts,
                "seq": ln.seq,
                "stream": ln.stream.value,
                "level": (ln.level or _DEFAULT_LEVEL.get(ln.stream, LogLevel.info)).value,
                "message": ln.message,
                "timestamp": ln.ts or now,
            }
            for ln in fresh
        ],
    )
    new_next = expected + len(fresh)
    res = conn.execute(update(T).where(T.c.id == task.id, T.c.next_seq == expected).values(next_seq=new_next))
    if res.rowcount != 1:
        raise Conflict("lines: a concurrent batch moved the log on; resend", next_seq=expected)
    return new_next


def _system_line(conn: Connection, n: int, message: str, level: LogLevel) -> None:
    """A line written by the cloud itself (cancel, lost agent), in the attempt's seq order."""
    task = _fetch(conn, n)
    if task is not None:
        _store_lines(conn, task, [LogLine(seq=task.next_seq, stream=LogStream.system, level=level, message=message)])


def report_result(conn: Connection, task_id: str, report: TaskReport) -> TaskRow:
    """Record the attempt's outcome (idempotent for the same report); 409 if stale or log incomplete.

    The usual case (every line already shipped, token current) is one compare-and-set UPDATE; the
    reads that explain a refusal happen only when it matches nothing.
    """
    n = parse_task_id(task_id)
    if n is not None and not report.lines:
        row = _finish(conn, n, report, next_seq=report.log_lines + 1)
        if row is not None:
            return row
    task = _task_for_agent(conn, task_id, report.task_token)
    if TaskStatus(task.status).is_final:
        if task.status == report.status.value:
            return task  # a resend of a result we already stored
        raise Conflict(f"task {task_id} already finished ({task.status})")
    next_seq = _store_lines(conn, task, report.lines)
    if next_seq - 1 != report.log_lines:
        raise Conflict(
            f"log_lines: the cloud has {next_seq - 1} of {report.log_lines} lines; resend the rest", next_seq=next_seq
        )
    row = _finish(conn, task.id, report, next_seq)
    if row is None:
        raise Conflict(f"task {task_id} changed while the result was stored; it is no longer running")
    return row


def _finish(conn: Connection, n: int, report: TaskReport, next_seq: int) -> TaskRow | None:
    """The compare-and-set to the final status; None when the task is not in the expected state."""
    params = {
        "n": n,
        "b_token": report.task_token,
        "b_next_seq": next_seq,
        "b_status": report.status.value,
        "b_exit_code": report.exit_code,
        "b_result": report.result,
        "b_data": report.data,
        "b_error": report.error,
        "b_now": utcnow(),
    }
    row = conn.execute(_FINISH, params).first()
    if row is not None:
        events.publish(conn, f"task:{n}", payload=row)
        events.publish(conn, f"logs:{n}")
    return row


def reap_expired(conn: Connection) -> int:
    """Fail running tasks whose lease expired (their agent stopped heartbeating)."""
    now = utcnow()
    expired = conn.execute(select(T.c.id).where(T.c.status == _RUNNING, T.c.lease_expires_at < now)).scalars().all()
    reaped = 0
    for n in expired:
        res = conn.execute(
            update(T)
            .where(T.c.id == n, T.c.status == _RUNNING, T.c.lease_expires_at < now)
            .values(
                status=TaskStatus.failed.value,
                error="agent lost",
                last_error="agent lost",
                finished_at=now,
                updated_at=now,
            )
        )
        if res.rowcount == 1:
            reaped += 1
            _system_line(conn, n, "agent lost: no heartbeat before the lease expired", LogLevel.error)
            events.publish(conn, f"task:{n}", f"logs:{n}")
    return reaped
