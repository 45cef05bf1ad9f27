"""The task state machine: create, claim, log, report, cancel, reap. Every status change is one
compare-and-set UPDATE whose row count is checked, so concurrent callers can never both win."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, delete, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cloud.db.models import Agent, LogEntry, Task
from cloud.db.types import utcnow
from cloud.services import events
from cloud.services.agents import get_agent, is_online, touch_agent
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

_DEFAULT_LEVEL = {LogStream.stdout: LogLevel.info, LogStream.stderr: LogLevel.warn}


def _rowcount(res: Any) -> int:
    return int(res.rowcount) if isinstance(res, CursorResult) else 0


def validate_request(req: TaskRequest) -> None:
    """Ask the type's executor to check command/params; raise BadRequest naming the field."""
    try:
        get_executor(req.type).validate(req)
    except UnknownTaskType as exc:
        raise BadRequest(str(exc)) from exc
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def create_task(session: Session, req: TaskCreate, *, offline_after: float) -> tuple[Task, bool]:
    """Queue a task; returns (task, created). A known request_id returns the existing task."""
    if req.request_id:
        existing = session.exec(select(Task).where(Task.request_id == req.request_id)).first()
        if existing is not None:
            return existing, False
    validate_request(req)
    agent = get_agent(session, req.agent_id)
    _check_agent_can_run(agent, req.type, offline_after)
    now = utcnow()
    task = Task(
        agent_id=req.agent_id,
        type=req.type,
        command=req.command,
        params=req.params,
        env=req.env,
        file_id=req.file_id,
        exec_timeout=req.exec_timeout or default_exec_timeout(req.type),
        request_id=req.request_id,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(task)
    except IntegrityError:
        # Another request with the same request_id won the insert first.
        existing = session.exec(select(Task).where(Task.request_id == req.request_id)).first()
        if existing is None:
            raise
        return existing, False
    events.publish(session, f"agent:{req.agent_id}")
    return task, True


def _check_agent_can_run(agent: Agent, type_name: str, offline_after: float) -> None:
    if not is_online(agent, offline_after):
        seen = agent.last_seen_at.isoformat() if agent.last_seen_at else "never"
        raise Conflict(f"agent_id: agent {agent.id} is offline (last seen {seen})")
    if agent.executors and type_name not in agent.executors:
        raise Conflict(f"type: agent {agent.id} cannot run {type_name!r} tasks; it has: {', '.join(agent.executors)}")


def get_task(session: Session, task_id: str) -> Task:
    """The task named `task-<n>` (or `<n>`), or NotFound."""
    n = parse_task_id(task_id)
    task = session.get(Task, n) if n is not None else None
    if task is None:
        raise NotFound(f"task not found: {task_id}")
    return task


@dataclass
class TaskFilter:
    agent_id: str | None = None
    type: str | None = None
    status: TaskStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None


def list_tasks(session: Session, flt: TaskFilter, page: int, page_size: int) -> tuple[list[Task], int]:
    """One page of tasks, newest first, and the total matching the filter."""
    conds: list[Any] = []
    if flt.agent_id:
        conds.append(col(Task.agent_id) == flt.agent_id)
    if flt.type:
        conds.append(col(Task.type) == flt.type)
    if flt.status:
        conds.append(col(Task.status) == flt.status.value)
    if flt.since:
        conds.append(col(Task.created_at) >= flt.since)
    if flt.until:
        conds.append(col(Task.created_at) < flt.until)
    if flt.q:
        conds.append(col(Task.command).contains(flt.q, autoescape=True))
    total = session.exec(select(func.count()).select_from(Task).where(*conds)).one()
    rows = session.exec(
        select(Task).where(*conds).order_by(col(Task.id).desc()).offset((page - 1) * page_size).limit(page_size)
    ).all()
    return list(rows), int(total)


def cancel_task(session: Session, task: Task) -> Task:
    """Cancel a pending task at once; ask the agent to stop a running one. 409 when already final."""
    now = utcnow()
    if task.status == TaskStatus.pending:
        res = session.execute(
            update(Task)
            .where(col(Task.id) == task.id, col(Task.status) == TaskStatus.pending)
            .values(
                status=TaskStatus.canceled,
                error="canceled before an agent claimed it",
                finished_at=now,
                updated_at=now,
            )
        )
        if _rowcount(res) == 1:
            _system_line(session, task, "canceled before an agent claimed it", LogLevel.warn)
            events.publish(session, f"task:{task.id}", f"logs:{task.id}")
            session.refresh(task)
            return task
        session.refresh(task)  # claimed meanwhile: fall through to the running case
    if task.status == TaskStatus.running:
        session.execute(
            update(Task)
            .where(col(Task.id) == task.id, col(Task.status) == TaskStatus.running)
            .values(cancel_requested=True, updated_at=now)
        )
        events.publish(session, f"cancel:{task.agent_id}")
        session.refresh(task)
        return task
    raise Conflict(f"task {format_task_id(task.id or 0)} already finished ({task.status})")


def delete_task(session: Session, task: Task) -> None:
    """Delete a finished task and its log; 409 while it is pending or running."""
    if not TaskStatus(task.status).is_final:
        raise Conflict(f"task {format_task_id(task.id or 0)} is {task.status}; cancel it first")
    session.execute(delete(LogEntry).where(col(LogEntry.task_id) == task.id))
    session.delete(task)
    session.flush()


def claim_tasks(
    session: Session,
    agent_id: str,
    capacity: int,
    lease_seconds: float,
    max_log_bytes: int,
    claimer: str = "",
) -> list[Assignment]:
    """Hand up to `capacity` pending tasks to one claim; each gets a fresh task_token and lease."""
    _touch_registered(session, agent_id)
    candidates = session.exec(
        select(Task)
        .where(col(Task.agent_id) == agent_id, col(Task.status) == TaskStatus.pending)
        .order_by(col(Task.id))
        .limit(capacity)
        .with_for_update(skip_locked=True)
    ).all()
    now = utcnow()
    out: list[Assignment] = []
    for task in candidates:
        token = secrets.token_hex(16)
        res = session.execute(
            update(Task)
            .where(col(Task.id) == task.id, col(Task.status) == TaskStatus.pending)
            .values(
                status=TaskStatus.running,
                task_token=token,
                attempts=Task.attempts + 1,
                next_seq=1,
                cancel_requested=False,
                started_at=now,
                updated_at=now,
                claimed_by=claimer or None,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(res) != 1:
            continue  # another claim took it between our read and our write
        out.append(
            Assignment(
                id=format_task_id(task.id or 0),
                type=task.type,
                command=task.command,
                params=task.params,
                file_id=task.file_id,
                env=task.env,
                exec_timeout=task.exec_timeout,
                attempt=task.attempts + 1,
                task_token=token,
                max_log_bytes=max_log_bytes,
            )
        )
    return out


def heartbeat(session: Session, agent_id: str, running: list[str], lease_seconds: float) -> list[str]:
    """Renew the leases of the agent's running tasks; return the ids whose cancel was requested."""
    _touch_registered(session, agent_id)
    ids = [n for n in (parse_task_id(r) for r in running) if n is not None]
    if not ids:
        return []
    now = utcnow()
    session.execute(
        update(Task)
        .where(col(Task.id).in_(ids), col(Task.agent_id) == agent_id, col(Task.status) == TaskStatus.running)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return pending_cancels(session, agent_id, ids)


def _touch_registered(session: Session, agent_id: str) -> None:
    if not touch_agent(session, agent_id):
        raise NotFound(f"agent_id: agent {agent_id} is not registered; POST /api/v1/agents/register first")


def pending_cancels(session: Session, agent_id: str, ids: list[int]) -> list[str]:
    """Ids among `ids` that are running on this agent with a cancel requested."""
    rows = session.exec(
        select(Task.id).where(
            col(Task.id).in_(ids),
            col(Task.agent_id) == agent_id,
            col(Task.status) == TaskStatus.running,
            col(Task.cancel_requested),
        )
    ).all()
    return [format_task_id(n or 0) for n in rows]


def append_logs(session: Session, task_id: str, token: str, lines: list[LogLine]) -> int:
    """Store a batch of lines of the current attempt; returns the next seq expected.

    A repeated seq is ignored (the agent resent it); a gap is refused with 409 and the next expected
    seq so the agent resends from there.
    """
    task = _task_for_agent(session, task_id, token)
    if task.status != TaskStatus.running:
        fresh = [ln for ln in lines if ln.seq >= task.next_seq]
        if fresh:
            raise Conflict(f"task {task_id} is {task.status}; no more log lines accepted", next_seq=task.next_seq)
        return task.next_seq
    return _store_lines(session, task, lines)


def _task_for_agent(session: Session, task_id: str, token: str) -> Task:
    task = get_task(session, task_id)
    if not token or not secrets.compare_digest(task.task_token or "", token):
        raise Conflict(f"task_token: stale or unknown token for {task_id}; this attempt no longer owns it")
    return task


def _store_lines(session: Session, task: Task, lines: list[LogLine]) -> int:
    expected = task.next_seq
    fresh = sorted((ln for ln in lines if ln.seq >= expected), key=lambda ln: ln.seq)
    if not fresh:
        return expected
    for i, line in enumerate(fresh):
        if line.seq != expected + i:
            raise Conflict(f"lines: log gap, expected seq {expected + i} but got {line.seq}", next_seq=expected + i)
    now = utcnow()
    session.execute(
        insert(LogEntry),
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
    res = session.execute(
        update(Task)
        .where(col(Task.id) == task.id, col(Task.next_seq) == expected)
        .values(next_seq=new_next)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(res) != 1:
        raise Conflict("lines: a concurrent batch moved the log on; resend", next_seq=expected)
    task.next_seq = new_next
    events.publish(session, f"logs:{task.id}")
    return new_next


def _system_line(session: Session, task: Task, message: str, level: LogLevel) -> None:
    """A line written by the cloud itself (cancel, lost agent), in the attempt's seq order."""
    session.refresh(task)
    line = LogLine(seq=task.next_seq, stream=LogStream.system, level=level, message=message)
    _store_lines(session, task, [line])


def report_result(session: Session, task_id: str, report: TaskReport) -> Task:
    """Record the attempt's outcome (idempotent for the same report); 409 if stale or log incomplete."""
    task = _task_for_agent(session, task_id, report.task_token)
    if TaskStatus(task.status).is_final:
        if task.status == report.status:
            return task  # a resend of a result we already stored
        raise Conflict(f"task {task_id} already finished ({task.status})")
    next_seq = _store_lines(session, task, report.lines)
    if next_seq - 1 != report.log_lines:
        raise Conflict(
            f"log_lines: the cloud has {next_seq - 1} of {report.log_lines} lines; resend the rest",
            next_seq=next_seq,
        )
    now = utcnow()
    res = session.execute(
        update(Task)
        .where(
            col(Task.id) == task.id,
            col(Task.status) == TaskStatus.running,
            col(Task.task_token) == report.task_token,
        )
        .values(
            status=report.status,
            exit_code=report.exit_code,
            result=report.result,
            data=report.data,
            error=report.error,
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(res) != 1:
        raise Conflict(f"task {task_id} changed while the result was stored; it is no longer running")
    events.publish(session, f"task:{task.id}", f"logs:{task.id}")
    session.refresh(task)
    return task


def reap_expired(session: Session) -> int:
    """Fail running tasks whose lease expired (their agent stopped heartbeating)."""
    now = utcnow()
    expired = session.exec(
        select(Task).where(col(Task.status) == TaskStatus.running, col(Task.lease_expires_at) < now)
    ).all()
    reaped = 0
    for task in expired:
        res = session.execute(
            update(Task)
            .where(
                col(Task.id) == task.id,
                col(Task.status) == TaskStatus.running,
                col(Task.lease_expires_at) < now,
            )
            .values(
                status=TaskStatus.failed,
                error="agent lost",
                last_error="agent lost",
                finished_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(res) == 1:
            reaped += 1
            _system_line(session, task, "agent lost: no heartbeat before the lease expired", LogLevel.error)
            events.publish(session, f"task:{task.id}")
    return reaped
