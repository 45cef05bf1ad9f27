"""Firing schedules: each due firing creates one task, once, across replicas and restarts.

A firing claims itself with a compare-and-set on the schedule row (`next_run_at = :planned` -> the next
time) in the transaction that inserts the task: two replicas cannot both win it, and a crash before the
commit leaves both undone, so the next pass (here or on another replica) fires it again. The next time
is always the first one after *now*, so a cloud that was down for many ticks fires at most once for
them (`missed: run_once`) or not at all (`missed: skip`), never a burst.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, select, update

from cloud.access import ADMIN, Principal
from cloud.db.models import CREDENTIALS as C
from cloud.db.models import SCHEDULES as S
from cloud.db.models import TASKS as T
from cloud.sealing import Sealer, Unsealable
from cloud.services import audit
from cloud.services.agents import AgentCache
from cloud.services.credentials import is_expired
from cloud.services.errors import Forbidden, ServiceError
from cloud.services.schedules import ScheduleRow
from cloud.services.tasks import create_task
from cloud.services.transitions import TaskRow
from executors.policy import CommandPolicy
from wire.credentials import Action, Scope, TokenKind
from wire.schedules import ONCE, Missed, next_fire
from wire.tasks import TaskCreate, format_task_id

log = logging.getLogger("tiangong.cloud")

ANY_AGE = 100 * 365 * 86400.0
"""A firing does not need its agent online: the task waits for it, up to its `expires_in`."""


@dataclass(frozen=True)
class Firing:
    """What creating a schedule's task needs, as a caller's request would have it."""

    agents: AgentCache
    sealer: Sealer
    policy: CommandPolicy
    default_expires_in: int
    grace_seconds: float
    """A firing later than this after its time counts as missed (the cloud was not running)."""


def due(conn: Connection, now: datetime, limit: int) -> list[tuple[int, datetime]]:
    """(id, planned time) of enabled schedules whose next run has come, earliest first."""
    query = (
        select(S.c.id, S.c.next_run_at)
        .where(S.c.enabled.is_(True), S.c.next_run_at <= now)
        .order_by(S.c.next_run_at, S.c.id)
        .limit(limit)
    )
    return [(r.id, r.next_run_at) for r in conn.execute(query)]


def fire(conn: Connection, schedule_id: int, planned: datetime, now: datetime, firing: Firing) -> TaskRow | None:
    """Fire the schedule's run planned at `planned`, if this transaction wins it; the task created (None
    when another replica fired it, or the firing made no task: the reason is in `last_error`)."""
    row = conn.execute(select(S).where(S.c.id == schedule_id)).first()
    if row is None or not row.enabled or row.next_run_at != planned:
        return None  # fired, changed or deleted meanwhile
    once = row.cron == ONCE
    try:
        nxt = None if once else next_fire(row.cron, row.timezone, now)
    except ValueError as exc:  # a time zone this machine no longer knows
        nxt, once = None, True
        log.warning("schedule %s disabled: %s", row.name, exc)
    claim = (
        update(S)
        .where(S.c.id == row.id, S.c.enabled.is_(True), S.c.next_run_at == planned)
        .values(next_run_at=nxt, enabled=not once, updated_at=now)
    )
    if conn.execute(claim).rowcount != 1:
        return None  # another replica won this firing
    late = (now - planned).total_seconds()
    if late > firing.grace_seconds and row.missed == Missed.skip.value:
        _failed(
            conn,
            row,
            f"the run planned at {planned.isoformat()} was missed (the cloud was not running); "
            "skipped, as `missed: skip` asks",
        )
        return None
    try:
        with conn.begin_nested():
            task = _create(conn, row, firing)
    except ServiceError as exc:
        _failed(conn, row, f"no task for the run planned at {planned.isoformat()}: {exc.message}")
        return None
    values: dict[str, Any] = {"last_run_at": now, "last_task_id": task.id, "runs": S.c.runs + 1, "last_error": ""}
    conn.execute(update(S).where(S.c.id == row.id).values(**values))
    return task


def _failed(conn: Connection, row: ScheduleRow, error: str) -> None:
    log.warning("schedule %s: %s", row.name, error)
    conn.execute(update(S).where(S.c.id == row.id).values(last_error=error))


def _create(conn: Connection, row: ScheduleRow, firing: Firing) -> TaskRow:
    """The task of one firing, made as its creator's request would make it, with `cron_source` set."""
    principal = _creator(conn, row)
    try:
        template = dict(row.template)
        template["params"] = firing.sealer.unseal(template.get("params", {}))
        template["env"] = firing.sealer.unseal(template.get("env", {}))
        req = TaskCreate.model_validate(template)
    except Unsealable as exc:
        raise Forbidden(f"the schedule's task cannot be made: {exc}") from None
    except ValidationError as exc:
        # Fields and reasons only: pydantic's own text quotes the input, unsealed secrets included, and
        # this message is stored in `last_error`, shown by the API and logged.
        raise Forbidden(f"the schedule's task cannot be made: {_fields(exc)}") from None
    agent = firing.agents.get(conn, req.agent_id)
    labels = agent.labels if agent is not None else None
    principal.require(Action.schedule, agent_id=req.agent_id, labels=labels, type_name=req.type)
    if req.file_id:
        principal.require(Action.files_read)
    task, _ = create_task(
        conn,
        req,
        agents=firing.agents,
        offline_after=ANY_AGE,
        sealer=firing.sealer,
        default_expires_in=firing.default_expires_in,
        policy=firing.policy,
    )
    conn.execute(update(T).where(T.c.id == task.id).values(cron_source=row.name))
    audit.record(conn, principal, "task.create", format_task_id(task.id), agent_id=req.agent_id, schedule=row.name)
    return task


def _fields(exc: ValidationError) -> str:
    """Each bad field of the stored template and why, never its value."""
    return "; ".join(".".join(["task", *map(str, e["loc"])]) + f": {e['msg']}" for e in exc.errors()[:5])


def _creator(conn: Connection, row: ScheduleRow) -> Principal:
    """The token that made the schedule, as it is now: a firing acts with its scope, and stops when it
    was deleted or expired."""
    if row.creator_id is None:
        return ADMIN  # the bootstrap admin token
    cred = conn.execute(select(C).where(C.c.id == row.creator_id)).first()
    if cred is None or is_expired(cred):
        state = "deleted" if cred is None else "expired"
        raise Forbidden(
            f"the token {row.created_by!r} that made this schedule was {state}; a current token re-saves it (PUT)"
        )
    scope = Scope.model_validate(cred.scope or {})
    return Principal(kind=TokenKind(cred.kind), name=cred.name, credential_id=cred.id, scope=scope)
