"""Fleet runs: one task on every agent an `agent_selector` matches, as AWS SSM Run Command does it.

A run is a parent task (agent_id `*`, which no agent can claim) and one ordinary child task per target
agent, started in the order of the targets as slots free: at most `concurrency` children pending or
running at once, and none started once more than `error_limit` children failed or timed out. A child
that cannot be delivered (its agent deleted, disabled, offline, or no longer running the type) fails
`not delivered` at once, which, as SSM's undeliverable targets, is no error but keeps the run from
`success`.

Every step is a compare-and-set on the parent's `attempts` (the children started so far), in the
transaction that inserts the children, so two replicas never both start one: the loser matches no row
and leaves the run to the winner. The unique index on (parent_id, agent_id) backs it up.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from cloud.access import Principal
from cloud.db import events
from cloud.db.models import TASKS as T
from cloud.db.types import utcnow
from cloud.sealing import Sealer
from cloud.services import agents as agents_svc
from cloud.services import transitions
from cloud.services.agents import AgentCache, is_online
from cloud.services.errors import BadRequest, Conflict, Forbidden, NotFound
from cloud.services.tasks import (
    cancel_task,
    delete_task,
    earlier,
    insert_once,
    new_task_values,
    sealed,
    validate_request,
)
from cloud.services.transitions import TaskRow
from wire.credentials import Action
from wire.fleet import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_ERRORS,
    FLEET_AGENT_ID,
    NOT_RUN,
    AgentSelector,
    resolve_limit,
)
from wire.tasks import NOT_DELIVERED, LogLevel, TaskCreate, TaskStatus, format_task_id, parse_task_id

FLEET_KEY = "fleet"
"""Wake-up key published when a child task ends (cloud.services.transitions): the dispatcher looks at
its runs again. One key for all runs: a pass reads the few unfinished parents anyway."""

INTERACTIVE_TYPES = frozenset({"web_shell"})
"""Types a person drives through one terminal: a fleet of them would open a session per agent, unattended."""

_S = TaskStatus
_ACTIVE = (_S.pending.value, _S.running.value)


@dataclass(frozen=True)
class Launcher:
    """What starting children needs: the agents as task creation sees them, and when one is offline."""

    agents: AgentCache
    offline_after: float


def match_targets(
    conn: Connection, selector: AgentSelector, type_name: str, principal: Principal, max_targets: int
) -> list[str]:
    """The agent ids a run targets, in id order: named in `ids` or matching `globs` (every agent when
    both are empty), carrying all `labels`, reached by the token and running the type. A named id that
    is unknown, out of reach or cannot run the type is refused naming it; patterns only filter."""
    agents = {a.id: a for a in agents_svc.list_agents(conn)}
    for i, agent_id in enumerate(selector.ids):
        agent = agents.get(agent_id)
        where = f"agent_selector.ids[{i}]"
        if agent is None:
            raise NotFound(f"{where}: agent not found: {agent_id}")
        if not principal.reaches_agent(agent_id, agent.labels):
            raise Forbidden(f"{where}: token {principal.name!r} does not reach agent {agent_id!r}")
        if not _runs(agent, type_name):
            has = ", ".join(agent.executors)
            raise Conflict(f"{where}: agent {agent_id} cannot run {type_name!r} tasks; it has: {has}")
    named = set(selector.ids)
    matched = [
        a.id
        for a in agents.values()
        if (a.id in named or any(fnmatchcase(a.id, g) for g in selector.globs) or not (named or selector.globs))
        and all(a.labels.get(k) == v for k, v in selector.labels.items())
        and principal.reaches_agent(a.id, a.labels)
        and _runs(a, type_name)
    ]
    if not matched:
        raise NotFound(
            f"agent_selector: no agent matches it, among the agents token {principal.name!r} reaches that run "
            f"{type_name!r} tasks"
        )
    if len(matched) > max_targets:
        raise BadRequest(
            f"agent_selector: matches {len(matched)} agents; at most {max_targets} per run (fleet_max_targets)"
        )
    return sorted(matched)


def _runs(agent: Any, type_name: str) -> bool:
    return not agent.executors or type_name in agent.executors


def create_run(
    conn: Connection,
    req: TaskCreate,
    *,
    principal: Principal,
    sealer: Sealer,
    launcher: Launcher,
    default_expires_in: int,
    max_targets: int,
) -> tuple[TaskRow, bool]:
    """The parent of a fleet run and its first children, as (parent, created). Validated, policed and
    sealed by the caller's checks as a one-agent task is; a repeated request_id returns the run made
    before (or Conflict when the request differs)."""
    assert req.agent_selector is not None
    params, env, print_ = sealed(req, sealer)
    before = earlier(conn, req, print_, sealer, "request_id")
    if before is not None:
        return before, False
    if req.type in INTERACTIVE_TYPES:
        raise BadRequest(f"type: {req.type} is one interactive session on one agent; give agent_id, not agent_selector")
    validate_request(req)
    targets = match_targets(conn, req.agent_selector, req.type, principal, max_targets)
    concurrency_limit = req.max_concurrency if req.max_concurrency is not None else DEFAULT_MAX_CONCURRENCY
    error_limit = req.max_errors if req.max_errors is not None else DEFAULT_MAX_ERRORS
    fleet = {
        "selector": req.agent_selector.model_dump(mode="json"),
        "max_concurrency": concurrency_limit,
        "max_errors": error_limit,
        "concurrency": resolve_limit(concurrency_limit, len(targets), round_up=True),
        "error_limit": resolve_limit(error_limit, len(targets), round_up=False),
        "targets": targets,
    }
    now = utcnow()
    values = {
        **new_task_values(req, params, env, req.expires_in or default_expires_in, now),
        "agent_id": FLEET_AGENT_ID,
        "expires_at": None,  # the parent is never claimed: only its children expire undelivered
        "request_id": req.request_id,
        "request_fingerprint": print_,
        "fleet": fleet,
    }
    parent, created = insert_once(conn, values, req, print_, sealer, "request_id")
    if not created:
        return parent, False
    events.observe(conn, "task.created", parent)  # counted as it will be when it ends (tasks_finished)
    advance(conn, parent.id, launcher, now=now)
    return _fetch(conn, parent.id), True


_COPIED = (
    "type",
    "command",
    "params",
    "env",
    "file_id",
    "exec_timeout",
    "max_retries",
    "retry_backoff",
    "retry_on",
    "expires_in",
    "cron_source",
)


def _fetch(conn: Connection, task_id: int) -> TaskRow:
    return conn.execute(select(T).where(T.c.id == task_id)).one()


@dataclass(frozen=True)
class Tally:
    """A run's children counted: by status, how many are active, and how many count as errors."""

    by_status: Mapping[str, int]
    active: int
    errors: int
    launched: int


def tally(conn: Connection, parent_id: int) -> Tally:
    """A run's children counted, in the database (a child's row may hold megabytes of output). SSM's
    error count: failed or timed out, not counting a child that was never delivered."""
    undelivered = T.c.error.startswith(NOT_DELIVERED, autoescape=True).label("undelivered")
    query = (
        select(T.c.status, undelivered, func.count())
        .where(T.c.parent_id == parent_id)
        .group_by(T.c.status, undelivered)
    )
    by_status: Counter[str] = Counter()
    errors = 0
    for status, not_delivered, n in conn.execute(query):
        by_status[status] += n
        if status == _S.timeout.value or (status == _S.failed.value and not not_delivered):
            errors += n
    active = by_status[_S.pending.value] + by_status[_S.running.value]
    return Tally(by_status, active, errors, sum(by_status.values()))


_CHILD_COLUMNS = (T.c.id, T.c.agent_id, T.c.status, T.c.exit_code, T.c.error, T.c.started_at, T.c.finished_at)


def children(conn: Connection, parent_id: int) -> list[Any]:
    """The children of a run in the order they were started: the columns a run's results show (not
    their output, which `GET /api/v1/tasks?parent_id=` lists)."""
    query = select(*_CHILD_COLUMNS).where(T.c.parent_id == parent_id).order_by(T.c.id)
    return list(conn.execute(query).all())


def aggregate(conn: Connection, parent_id: int) -> tuple[list[Any], Tally]:
    """What a run's read shows: its children's results and their counts."""
    return children(conn, parent_id), tally(conn, parent_id)


def advance(conn: Connection, parent_id: int, launcher: Launcher, *, now: datetime | None = None) -> bool:
    """One dispatcher step for a run: start children while slots are free and errors within the limit,
    then end the parent once nothing runs and nothing more will start. Whether anything changed; False
    also when another transaction moved the run on first (its compare-and-set won)."""
    now = now or utcnow()
    parent = conn.execute(select(T).where(T.c.id == parent_id)).first()
    if parent is None or parent.fleet is None or _S(parent.status).is_final:
        return False
    spec, changed = parent.fleet, False
    targets: list[str] = spec["targets"]
    while True:
        count = tally(conn, parent.id)
        stop = count.errors > spec["error_limit"]
        free = spec["concurrency"] - count.active
        todo = [] if stop or free <= 0 else targets[parent.attempts : parent.attempts + free]
        if not todo:
            break
        parent = _take(conn, parent, len(todo), now)
        if parent is None:
            return changed  # another replica started these: the run is its to go on with now
        for agent_id in todo:
            _launch(conn, parent, agent_id, launcher, now)
        changed = True  # and again: a child failed undelivered at once frees its slot
    if count.active == 0 and (stop or parent.attempts >= len(targets)):
        changed = _finish(conn, parent, count, stop, now) or changed
    return changed


def _take(conn: Connection, parent: TaskRow, n: int, now: datetime) -> TaskRow | None:
    """Claim the next `n` targets of the run: attempts moves on from what this pass read, or nothing."""
    before = parent.attempts
    if parent.status == _S.pending.value:
        spec = parent.fleet
        line = (
            f"fleet run on {len(spec['targets'])} agent(s): up to {spec['concurrency']} at once "
            f"(max_concurrency {spec['max_concurrency']}), no new one after more than {spec['error_limit']} "
            f"error(s) (max_errors {spec['max_errors']})"
        )
        return transitions.transition(
            conn,
            parent.id,
            to=_S.running,
            expect_from=_S.pending,
            match={"attempts": before},
            line=line,
            now=now,
            attempts=before + n,
            started_at=now,
        )
    # Not a status change: the run stays running, one step further.
    stmt = (
        update(T)
        .where(T.c.id == parent.id, T.c.status == _S.running.value, T.c.attempts == before)
        .values(attempts=before + n, updated_at=now)
        .returning(*T.c)
    )
    return conn.execute(stmt).first()


def _launch(conn: Connection, parent: TaskRow, agent_id: str, launcher: Launcher, now: datetime) -> None:
    """Insert the child of `agent_id`, pending for its agent, or failed `not delivered` at once when
    its agent cannot take it now."""
    values = {c: getattr(parent, c) for c in _COPIED}
    values |= {
        "agent_id": agent_id,
        "parent_id": parent.id,
        "status": _S.pending.value,
        "result": "",
        "data": None,
        "error": "",
        "attempts": 0,
        "retries": 0,
        "expires_at": now + timedelta(seconds=parent.expires_in),
        "last_error": "",
        "next_seq": 1,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
    }
    child = conn.execute(insert(T).returning(*T.c), values).one()
    events.observe(conn, "task.created", child)
    why = _undeliverable(conn, launcher, agent_id, parent.type)
    if why is None:
        events.publish(conn, f"agent:{agent_id}")
        return
    error = f"{NOT_DELIVERED}: agent {agent_id} {why}"
    transitions.fail(conn, child, error, expect_from=_S.pending)


def _undeliverable(conn: Connection, launcher: Launcher, agent_id: str, type_name: str) -> str | None:
    """Why the agent cannot take a new task now (as a one-agent create would refuse it), or None."""
    agent = launcher.agents.get(conn, agent_id)
    if agent is None:
        return "no longer exists"
    if agent.disabled:
        return "is disabled"
    if not is_online(agent.last_seen_at, launcher.offline_after):
        seen = agent.last_seen_at.isoformat() if agent.last_seen_at else "never"
        return f"is offline (last seen {seen})"
    if not _runs(agent, type_name):
        return f"cannot run {type_name!r} tasks"
    return None


def _finish(conn: Connection, parent: TaskRow, count: Tally, stop: bool, now: datetime) -> bool:
    """End the parent: success when every target succeeded; else failed, its outcome saying whether
    errors passed max_errors (`failed`) or every target was tried (`incomplete`)."""
    targets = len(parent.fleet["targets"])
    ok = count.by_status[_S.success.value]
    not_run = targets - count.launched
    if stop:
        outcome = "failed"
        error = (
            f"{count.errors} error(s), more than max_errors allows ({parent.fleet['error_limit']}): "
            f"{not_run} target(s) not run"
        )
    elif ok == targets:
        outcome, error = "success", ""
    else:
        outcome = "incomplete"
        error = f"{targets - ok} of {targets} target(s) did not succeed ({count.errors} error(s), within max_errors)"
    summary = f"{ok} of {targets} agent(s) succeeded"
    status = _S.success if outcome == "success" else _S.failed
    row = transitions.transition(
        conn,
        parent.id,
        to=status,
        expect_from=_S.running,  # the first child started it
        match={"attempts": parent.attempts},
        line=f"fleet run {outcome}: {summary}" + (f"; {error}" if error else ""),
        level=LogLevel.info if status is _S.success else LogLevel.error,
        now=now,
        result=summary,
        error=error,
        last_error=error,
        data={"outcome": outcome, "counts": counts(count, targets)},
    )
    return row is not None


def counts(count: Tally, targets: int) -> dict[str, int]:
    """Targets by status, `not_run`, and `errors`."""
    shown = {s.value: count.by_status[s.value] for s in _S}
    return shown | {NOT_RUN: targets - count.launched, "errors": count.errors}


def cancel_run(conn: Connection, parent: TaskRow) -> TaskRow:
    """Cancel a run: the parent ends `canceled` at once, no further child starts, and its pending and
    running children are canceled as a one-agent task is. 409 when the run already ended."""
    if _S(parent.status).is_final:
        raise Conflict(f"task {format_task_id(parent.id)} already finished ({parent.status})")
    message = "fleet run canceled: no further agent starts"
    targets = len(parent.fleet["targets"])
    # The compare-and-set on attempts: a launch that committed first is seen (and canceled) below; one
    # that comes later matches no running parent and starts nothing.
    row = transitions.transition(
        conn,
        parent.id,
        to=_S.canceled,
        expect_from=_S(parent.status),
        match={"attempts": parent.attempts},
        line=message,
        level=LogLevel.warn,
        error=message,
    )
    if row is None:
        return cancel_run(conn, _fetch(conn, parent.id))  # a step won the race: cancel what it left
    for child in children(conn, parent.id):
        if child.status in _ACTIVE:
            with contextlib.suppress(Conflict):  # it ended meanwhile
                cancel_task(conn, child)
    count = tally(conn, parent.id)
    data = {"outcome": "canceled", "counts": counts(count, targets)}
    conn.execute(update(T).where(T.c.id == parent.id).values(data=data))
    return _fetch(conn, parent.id)


def active_runs(conn: Connection) -> list[int]:
    """The runs not ended yet, oldest first."""
    query = select(T.c.id).where(T.c.agent_id == FLEET_AGENT_ID, T.c.status.in_(_ACTIVE)).order_by(T.c.id)
    return list(conn.execute(query).scalars())


def require_on_run(conn: Connection, agents: AgentCache, principal: Principal, parent: TaskRow, action: Action) -> None:
    """A scoped token acts on a run only if it reaches every target of it (and its type), as creating
    it required: a run's aggregate shows every target's outcome."""
    if principal.is_admin:
        return
    principal.require(action, type_name=parent.type)
    if principal.all_agents:
        return
    for agent_id in parent.fleet["targets"]:
        labels = None
        if principal.scope.labels and not principal.reaches_agent(agent_id):
            row = agents.get(conn, agent_id)
            labels = row.labels if row is not None else None
        if not principal.reaches_agent(agent_id, labels):
            raise Forbidden(f"agent_id: token {principal.name!r} does not reach agent {agent_id!r} of this fleet run")


def delete_run(conn: Connection, parent: TaskRow) -> None:
    """Delete an ended run with its children and their logs; 409 while it or a child is unfinished."""
    kids = children(conn, parent.id)
    busy = [format_task_id(c.id) for c in kids if c.status in _ACTIVE]
    if busy:
        raise Conflict(f"task {format_task_id(parent.id)}: its children {', '.join(busy[:10])} have not ended")
    delete_task(conn, parent)  # 409 while the parent itself runs
    for child in kids:
        delete_task(conn, child)


def list_condition(parent_id: str | None, children: bool | None, *, by_agent: bool) -> Any:
    """The task list's condition on fleet runs: `parent_id` lists one run's children; otherwise children
    are left out unless asked for (`children=true`) or the list is of one agent's tasks."""
    if parent_id is not None:
        n = parse_task_id(parent_id)
        if n is None:
            raise BadRequest(f"parent_id: not a task id: {parent_id[:40]!r}; expected task-<n>")
        return T.c.parent_id == n
    if children if children is not None else by_agent:
        return None
    return T.c.parent_id.is_(None)


def is_run(task: TaskRow) -> bool:
    """Whether the task is a fleet run's parent."""
    return task.fleet is not None
