"""Schedules as callers see them: create, read, list, replace, enable or disable, delete. Firing them is
cloud/services/scheduler.py.

A schedule's task template is checked as a POST /api/v1/tasks body is (the type's executor, the agent
exists and runs the type; the route applies the command policy), and its secrets are stored sealed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.access import Principal
from cloud.db.models import SCHEDULES as S
from cloud.db.types import utcnow
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache
from cloud.services.errors import BadRequest, Conflict, NotFound
from cloud.services.tasks import check_agent_can_run, validate_request
from wire.schedules import ONCE, ScheduleCreate, TaskTemplate, next_fire, parse_schedule_id
from wire.secrets import secret_keys_of

ScheduleRow = Row[Any]


def first_run(cron: str, tz: str, start_at: datetime | None, now: datetime) -> datetime | None:
    """When a schedule saved (or enabled) at `now` fires first: `@once` at `start_at` or at once; a cron
    expression at its first time after `now` and not before `start_at`."""
    later = start_at is not None and start_at > now
    if cron == ONCE:
        return start_at if later else now
    if later:
        assert start_at is not None
        return next_fire(cron, tz, start_at - timedelta(microseconds=1))  # `start_at` itself may be a time
    return next_fire(cron, tz, now)


def check_template(conn: Connection, agents: AgentCache, task: TaskTemplate) -> None:
    """The checks creating the task would make now, except that the agent may be offline (it may be back
    by the first firing): the type's validation, the agent exists, is enabled and runs the type."""
    try:
        validate_request(task)
        agent = agents.get(conn, task.agent_id)
        if agent is None:
            raise NotFound(f"agent_id: agent not found: {task.agent_id}")
        check_agent_can_run(agent, task.type, offline_after=None)
    except (BadRequest, NotFound, Conflict) as exc:
        raise type(exc)(f"task.{exc.message}") from None  # the field named inside the schedule's body


def _values(body: ScheduleCreate, sealer: Sealer, now: datetime) -> dict[str, Any]:
    template = body.task.model_dump(mode="json")
    named = secret_keys_of(template["params"])
    template["params"] = sealer.seal(template["params"], named)
    template["env"] = sealer.seal(template["env"], named)
    return {
        "name": body.name,
        "cron": body.cron,
        "timezone": body.timezone,
        "missed": body.missed.value,
        "enabled": body.enabled,
        "agent_id": body.task.agent_id,
        "type": body.task.type,
        "template": template,
        "start_at": body.start_at,
        "next_run_at": first_run(body.cron, body.timezone, body.start_at, now) if body.enabled else None,
        "updated_at": now,
    }


def create_schedule(conn: Connection, body: ScheduleCreate, principal: Principal, sealer: Sealer) -> ScheduleRow:
    """Store a schedule (its template checked by the caller); Conflict when the name is taken."""
    now = utcnow()
    values = {
        **_values(body, sealer, now),
        "last_error": "",
        "runs": 0,
        **_owner(principal),
        "created_at": now,
    }
    try:
        with conn.begin_nested():
            return conn.execute(insert(S).values(**values).returning(*S.c)).one()
    except IntegrityError:
        raise Conflict(f"name: a schedule named {body.name!r} exists already") from None


def _owner(principal: Principal) -> dict[str, Any]:
    return {"created_by": principal.name[:128], "creator_id": principal.credential_id}


def replace_schedule(
    conn: Connection, row: ScheduleRow, body: ScheduleCreate, principal: Principal, sealer: Sealer
) -> ScheduleRow:
    """PUT: every field replaced and the next run computed afresh from now. The token saving it becomes
    its `created_by`: the firings act with that token's scope from then on."""
    values = {**_values(body, sealer, utcnow()), **_owner(principal), "last_error": ""}
    try:
        with conn.begin_nested():
            conn.execute(update(S).where(S.c.id == row.id).values(**values))
    except IntegrityError:
        raise Conflict(f"name: a schedule named {body.name!r} exists already") from None
    return fetch_or_404(conn, row.id)


def set_enabled(conn: Connection, row: ScheduleRow, enabled: bool) -> ScheduleRow:
    """Enable (the next run computed from now: what was missed while disabled is not run) or disable."""
    now = utcnow()
    nxt = first_run(row.cron, row.timezone, row.start_at, now) if enabled else None
    conn.execute(update(S).where(S.c.id == row.id).values(enabled=enabled, next_run_at=nxt, updated_at=now))
    return fetch_or_404(conn, row.id)


def delete_schedule(conn: Connection, row: ScheduleRow) -> None:
    """Delete the schedule; the tasks it created stay (their `cron_source` still names it)."""
    conn.execute(delete(S).where(S.c.id == row.id))


def fetch_or_404(conn: Connection, n: int) -> ScheduleRow:
    row = conn.execute(select(S).where(S.c.id == n)).first()
    if row is None:
        raise NotFound(f"schedule not found: schedule-{n}")
    return row


def get_schedule(conn: Connection, schedule_id: str) -> ScheduleRow:
    """The schedule named `schedule-<n>` (or `<n>`), or NotFound."""
    n = parse_schedule_id(schedule_id)
    if n is None:
        raise NotFound(f"schedule not found: {schedule_id}")
    return fetch_or_404(conn, n)


@dataclass
class ScheduleFilter:
    """Seed 001's list filters: agent, enabled, last run between, name (a substring), creator."""

    agent_id: str | None = None
    enabled: bool | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    name: str | None = None
    created_by: str | None = None
    # A scoped token's reach: only these agents / types (None: no restriction).
    agent_ids: list[str] | None = None
    types: list[str] | None = None


def list_schedules(conn: Connection, flt: ScheduleFilter, page: int, page_size: int) -> tuple[list[ScheduleRow], int]:
    """One page of schedules, newest first, and the total matching the filter."""
    conds: list[Any] = []
    if flt.agent_id is not None:
        conds.append(S.c.agent_id == flt.agent_id)
    if flt.enabled is not None:
        conds.append(S.c.enabled.is_(flt.enabled))
    if flt.start_time is not None:
        conds.append(S.c.last_run_at >= flt.start_time)
    if flt.end_time is not None:
        conds.append(S.c.last_run_at < flt.end_time)
    if flt.name:
        conds.append(S.c.name.contains(flt.name, autoescape=True))
    if flt.created_by is not None:
        conds.append(S.c.created_by == flt.created_by)
    if flt.agent_ids is not None:
        conds.append(S.c.agent_id.in_(flt.agent_ids))
    if flt.types is not None:
        conds.append(S.c.type.in_(flt.types))
    total = conn.execute(select(func.count()).select_from(S).where(*conds)).scalar_one()
    rows = conn.execute(
        select(S).where(*conds).order_by(S.c.id.desc()).offset((page - 1) * page_size).limit(page_size)
    ).all()
    return list(rows), int(total)
