"""Tasks as callers see them: create, read, list, cancel, delete. The agent's side is in runs.py; every
status change goes through transitions.py, one compare-and-set UPDATE whose row count is checked, so
concurrent callers can never both win.

Everything is SQLAlchemy Core on one Connection: the ORM's unit of work cost more than the SQL itself
(measured with bench/roundtrip.py), and statements on the per-task path are built once, for the same
reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, literal, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from cloud.db import events
from cloud.db.models import TASK_LOGS as L
from cloud.db.models import TASKS as T
from cloud.db.prepared import Prepared, inserting
from cloud.db.types import utcnow
from cloud.sealing import SEALED, Sealer, find_sealed_marker
from cloud.services import idempotency, transitions
from cloud.services.agents import AgentCache, is_online
from cloud.services.errors import BadRequest, Conflict, Forbidden, NotFound
from cloud.services.transitions import TaskRow
from executors.policy import CommandPolicy
from executors.registry import UnknownTaskType, default_exec_timeout, get_executor
from wire.secrets import secret_keys_of
from wire.tasks import LogLevel, TaskCreate, TaskRequest, TaskStatus, format_task_id, parse_task_id

PENDING, RUNNING = TaskStatus.pending.value, TaskStatus.running.value

_BY_ID = Prepared(select(T).where(T.c.id == bindparam("n")))
_BY_REQUEST_ID = select(T).where(T.c.request_id == bindparam("b_request_id"))


def fetch(conn: Connection, n: int) -> TaskRow | None:
    """Task number n, or None."""
    return _BY_ID.first(conn, {"n": n})


def validate_request(req: TaskRequest) -> None:
    """Ask the type's executor to check command/params; raise BadRequest naming the field."""
    for name, value in (("params", req.params), ("env", req.env)):
        marker = find_sealed_marker(value)
        if marker:
            raise BadRequest(f"{name}.{marker}: the key {SEALED!r} is reserved")
    try:
        get_executor(req.type).validate(req)
    except (UnknownTaskType, ValueError) as exc:
        raise BadRequest(str(exc)) from exc


def create_task(
    conn: Connection,
    req: TaskCreate,
    *,
    agents: AgentCache,
    offline_after: float,
    sealer: Sealer,
    default_expires_in: int = 3600,
    key_name: str = "request_id",
    policy: CommandPolicy | None = None,
) -> tuple[TaskRow, bool]:
    """Queue a task; returns (task, created). A known request_id returns the existing task when the
    request is the same, else Conflict naming the key (`key_name`: where the caller put it). A command
    the `policy` refuses is Forbidden naming the rule (executors/policy.py), and nothing is stored.

    Secret-named values in params and env are stored sealed (see cloud.sealing)."""
    params, env, print_ = sealed(req, sealer)
    before = earlier(conn, req, print_, sealer, key_name)
    if before is not None:
        return before, False
    validate_request(req)
    refusal = policy.check(req.type, req.command, req.params) if policy is not None else None
    if refusal is not None:
        raise Forbidden(refusal.message, rule=refusal.rule)
    agent = agents.get(conn, req.agent_id)
    if agent is None:
        raise NotFound(f"agent_id: agent not found: {req.agent_id}")
    check_agent_can_run(agent, req.type, offline_after)
    now = utcnow()
    expires_in = req.expires_in or default_expires_in
    values = {
        **new_task_values(req, params, env, expires_in, now),
        "agent_id": req.agent_id,
        "expires_at": now + timedelta(seconds=expires_in),
        "request_id": req.request_id,
        "request_fingerprint": print_,
    }
    row, created = insert_once(conn, values, req, print_, sealer, key_name)
    if not created:
        return row, False
    events.publish(conn, f"agent:{req.agent_id}")
    events.observe(conn, "task.created", row)
    return row, True


def sealed(req: TaskCreate, sealer: Sealer) -> tuple[Any, Any, str | None]:
    """The request's params and env as stored (secret-named values sealed), and its idempotency
    fingerprint when it carries a request_id."""
    named = secret_keys_of(req.params)
    params, env = sealer.seal(req.params, named), sealer.seal(req.env, named)
    return params, env, idempotency.fingerprint(req, params, env) if req.request_id else None


def earlier(conn: Connection, req: TaskCreate, print_: str | None, sealer: Sealer, key_name: str) -> TaskRow | None:
    """The task an earlier request with this request_id made (Conflict when that request differs), or None."""
    if print_ is None:
        return None
    existing = conn.execute(_BY_REQUEST_ID, {"b_request_id": req.request_id}).first()
    return None if existing is None else _repeated(existing, req, print_, sealer, key_name)


def insert_once(
    conn: Connection, values: dict[str, Any], req: TaskCreate, print_: str | None, sealer: Sealer, key_name: str
) -> tuple[TaskRow, bool]:
    """Insert the task, as (row, True); (the task it repeats, False) when a concurrent request with the
    same request_id won the insert first."""
    statement = inserting(T, frozenset(values))
    if not req.request_id:
        return statement.rows(conn, values)[0], True
    try:
        with conn.begin_nested():
            return statement.rows(conn, values)[0], True
    except IntegrityError:
        existing = earlier(conn, req, print_, sealer, key_name)
        if existing is None:
            raise
        return existing, False


def new_task_values(req: TaskCreate, params: Any, env: Any, expires_in: int, now: datetime) -> dict[str, Any]:
    """The columns of a new, pending task taken from its request (a fleet run's parent too); the caller
    adds the agent, the expiry and the idempotency key."""
    return {
        "type": req.type,
        "status": PENDING,
        "command": req.command,
        "params": params,
        "env": env,
        "file_id": req.file_id,
        "exec_timeout": req.exec_timeout or default_exec_timeout(req),
        "result": "",
        "data": None,
        "error": "",
        "attempts": 0,
        "max_retries": req.max_retries,
        "retries": 0,
        "retry_backoff": req.retry_backoff,
        "retry_on": req.retry_on,
        "expires_in": expires_in,
        "last_error": "",
        "next_seq": 1,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
    }


def _repeated(existing: TaskRow, req: TaskCreate, print_: str, sealer: Sealer, key_name: str) -> TaskRow:
    """The task a reused idempotency key names, when the request is the same one; else Conflict."""
    if idempotency.same_request(existing, req, print_, sealer):
        return existing
    task_id = format_task_id(existing.id)
    raise Conflict(
        f"{key_name}: the key {req.request_id!r} was already used for {task_id} with a different request; "
        "repeat a key only with the same task (agent_id, type, command, params, env, file_id, timeouts, "
        "retry settings), or use a new key",
        task_id=task_id,
    )


def check_agent_for_retry(conn: Connection, task: TaskRow, *, agents: AgentCache, offline_after: float) -> None:
    """A retried task goes to its agent again: it must still exist, be online and run the type."""
    agent = agents.get(conn, task.agent_id)
    if agent is None:
        raise Conflict(f"agent_id: agent {task.agent_id} no longer exists")
    check_agent_can_run(agent, task.type, offline_after)


def check_agent_can_run(agent: Any, type_name: str, offline_after: float | None) -> None:
    """Conflict naming the field when the agent is disabled, offline (unless `offline_after` is None: a
    schedule's agent may be back by its first firing) or does not run the type."""
    if agent.disabled:
        raise Conflict(f"agent_id: agent {agent.id} is disabled; an admin enables it with PATCH /api/v1/agents/{{id}}")
    if offline_after is not None and not is_online(agent.last_seen_at, offline_after):
        seen = agent.last_seen_at.isoformat() if agent.last_seen_at else "never"
        raise Conflict(f"agent_id: agent {agent.id} is offline (last seen {seen})")
    if agent.executors and type_name not in agent.executors:
        raise Conflict(f"type: agent {agent.id} cannot run {type_name!r} tasks; it has: {', '.join(agent.executors)}")


def get_task(conn: Connection, task_id: str) -> TaskRow:
    """The task named `task-<n>` (or `<n>`), or NotFound."""
    n = parse_task_id(task_id)
    row = fetch(conn, n) if n is not None else None
    if row is None:
        raise NotFound(f"task not found: {task_id}")
    return row


@dataclass
class TaskFilter:
    agent_id: str | None = None
    type: str | None = None
    status: TaskStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    # A scoped token's reach: only these agents / types (None: no restriction).
    agent_ids: list[str] | None = None
    types: list[str] | None = None
    fleet: Any = None  # fleet runs: a condition on parent_id (cloud.services.fleet.list_condition)


@dataclass
class TaskPage:
    """One page of a task list and how many tasks match: exactly when `total_exact`, else at least
    `total` (the count stops at the count limit)."""

    rows: list[TaskRow]
    total: int
    total_exact: bool


NEWEST_FIRST = (T.c.created_at.desc(), T.c.id.desc())
"""The list's order: each filter has an index on (column, created_at, id), so a page is an index range
read in this order, whatever the table holds (migration 0010_task_list_indexes)."""


def list_tasks(
    conn: Connection,
    flt: TaskFilter,
    page: int,
    page_size: int,
    *,
    after: int | None = None,
    count_limit: int = 1000,
) -> TaskPage:
    """One page of tasks, newest first, and how many match the filter (counted up to `count_limit`: a
    total over a million rows costs more than the page itself). `after` (a task number) starts the list
    after that task, in this order: a page deep in a long list costs what the first page does, where
    `page` skips over every row before it."""
    conds = _conditions(flt)
    if after is not None:
        conds.append(_after(conn, after))
    ids = select(T.c.id).where(*conds)
    counted = conn.execute(select(func.count()).select_from(ids.limit(count_limit + 1).subquery())).scalar_one()
    skip = (page - 1) * page_size
    rows = list(conn.execute(select(T).where(*conds).order_by(*NEWEST_FIRST).offset(skip).limit(page_size)).all())
    if counted <= count_limit:
        return TaskPage(rows, int(counted), True)
    # Past the limit the total is a lower bound, never below what this page itself shows.
    return TaskPage(rows, max(count_limit, skip + len(rows)), False)


def _conditions(flt: TaskFilter) -> list[Any]:
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
    if flt.agent_ids is not None:
        conds.append(T.c.agent_id.in_(flt.agent_ids))
    if flt.types is not None:
        conds.append(T.c.type.in_(flt.types))
    if flt.fleet is not None:
        conds.append(flt.fleet)
    return conds


def _after(conn: Connection, n: int) -> Any:
    """The tasks that come after task n in the list's order. When task n is gone (deleted, or past the
    retention period) its number still places it: tasks are numbered in the order they were created."""
    created = conn.execute(select(T.c.created_at).where(T.c.id == n)).scalar()
    if created is None:
        return T.c.id < n
    return tuple_(T.c.created_at, T.c.id) < tuple_(literal(created, T.c.created_at.type), literal(n, T.c.id.type))


def cancel_task(conn: Connection, task: TaskRow) -> TaskRow:
    """Cancel a pending task at once; ask the agent to stop a running one. 409 when already final."""
    if task.status == PENDING:
        message = "canceled before an agent claimed it"
        row = transitions.transition(
            conn,
            task.id,
            to=TaskStatus.canceled,
            expect_from=TaskStatus.pending,
            line=message,
            level=LogLevel.warn,
            error=message,
        )
        if row is not None:
            return fetch(conn, task.id) or row
        task = fetch(conn, task.id) or task  # claimed meanwhile: stop it as a running task
    if task.status == RUNNING:
        # Not a status change: the agent ends the attempt and reports `canceled` as its result.
        conn.execute(
            update(T).where(T.c.id == task.id, T.c.status == RUNNING).values(cancel_requested=True, updated_at=utcnow())
        )
        events.publish(conn, f"cancel:{task.agent_id}")
        return fetch(conn, task.id) or task
    raise Conflict(f"task {format_task_id(task.id)} already finished ({task.status})")


def delete_task(conn: Connection, task: TaskRow) -> None:
    """Delete a finished task and its log; 409 while it is pending or running."""
    if not TaskStatus(task.status).is_final:
        raise Conflict(f"task {format_task_id(task.id)} is {task.status}; cancel it first")
    conn.execute(delete(L).where(L.c.task_id == task.id))
    conn.execute(delete(T).where(T.c.id == task.id))
