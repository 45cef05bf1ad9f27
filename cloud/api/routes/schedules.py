"""Caller routes for schedules: create, list, read, replace, enable or disable, delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from cloud.access import Principal
from cloud.api.deps import AppContext, AppDep, CallerAuth, PrincipalDep
from cloud.api.guard import GuardedRoute
from cloud.api.scopes import reach, require_on_task, require_schedule
from cloud.policy import enforce
from cloud.services import audit
from cloud.services import schedules as svc
from cloud.services.present_schedules import schedule_read
from cloud.services.schedules import ScheduleRow
from wire.credentials import Action
from wire.schedules import ScheduleCreate, ScheduleEnable, ScheduleList, ScheduleRead, format_schedule_id

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"], dependencies=[CallerAuth], route_class=GuardedRoute)


@router.post("", status_code=201, response_model=ScheduleRead)
async def create_schedule(body: ScheduleCreate, principal: PrincipalDep, app: AppDep) -> ScheduleRead:
    """Save a schedule; its task is checked as POST /api/v1/tasks checks one (the agent may be offline)."""
    return schedule_read(await save_new(app, principal, body))


async def save_new(app: AppContext, principal: Principal, body: ScheduleCreate) -> ScheduleRow:
    """Check and store a new schedule (also seed 001's POST /api/tasks): the command policy, as the tasks
    route applies it, then scope, type and agent."""
    await enforce(app.policy, body.task)
    with app.db.transaction() as conn:
        require_schedule(conn, app.agents, principal, body.task)
        svc.check_template(conn, app.agents, body.task)
        row = svc.create_schedule(conn, body, principal, app.sealer)
        _audit(conn, principal, "schedule.create", row)
    return row


@router.get("", response_model=ScheduleList)
async def list_schedules(
    principal: PrincipalDep,
    app: AppDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 10,
    agent_id: Annotated[str | None, Query(max_length=128)] = None,
    enabled: bool | None = None,
    start_time: Annotated[datetime | None, Query(description="Last run at or after this time.")] = None,
    end_time: Annotated[datetime | None, Query(description="Last run before this time.")] = None,
    name: Annotated[str | None, Query(max_length=200, description="Part of the name.")] = None,
    created_by: Annotated[str | None, Query(max_length=128, description="The saving token's name.")] = None,
) -> ScheduleList:
    """Schedules newest first, filtered; `{"list", "total", "page", "page_size"}`. A scoped token sees the
    schedules of the agents and types it reaches."""
    principal.require(Action.read)
    flt = svc.ScheduleFilter(
        agent_id=agent_id, enabled=enabled, start_time=start_time, end_time=end_time, name=name, created_by=created_by
    )
    with app.db.transaction() as conn:
        flt.agent_ids, flt.types = reach(conn, principal)
        rows, total = svc.list_schedules(conn, flt, page, page_size)
    items = await run_in_threadpool(lambda: [schedule_read(r) for r in rows])
    return ScheduleList(items=items, total=total, page=page, page_size=page_size)


@router.get("/{schedule_id}", response_model=ScheduleRead)
async def get_schedule(schedule_id: str, principal: PrincipalDep, app: AppDep) -> ScheduleRead:
    with app.db.transaction() as conn:
        row = svc.get_schedule(conn, schedule_id)
        require_on_task(conn, app.agents, principal, Action.read, row.agent_id, row.type)
    return schedule_read(row)


@router.put("/{schedule_id}", response_model=ScheduleRead)
async def replace_schedule(
    schedule_id: str, body: ScheduleCreate, principal: PrincipalDep, app: AppDep
) -> ScheduleRead:
    """Replace every field; the next run is computed afresh, and the firings act with this token's scope."""
    await enforce(app.policy, body.task)
    with app.db.transaction() as conn:
        row = svc.get_schedule(conn, schedule_id)
        require_on_task(conn, app.agents, principal, Action.schedule, row.agent_id, row.type)
        require_schedule(conn, app.agents, principal, body.task)
        svc.check_template(conn, app.agents, body.task)
        row = svc.replace_schedule(conn, row, body, principal, app.sealer)
        _audit(conn, principal, "schedule.update", row)
    return schedule_read(row)


@router.patch("/{schedule_id}", response_model=ScheduleRead)
async def enable_schedule(schedule_id: str, body: ScheduleEnable, principal: PrincipalDep, app: AppDep) -> ScheduleRead:
    """Enable (next run from now: what was missed while disabled does not run) or disable."""
    with app.db.transaction() as conn:
        row = svc.get_schedule(conn, schedule_id)
        require_on_task(conn, app.agents, principal, Action.schedule, row.agent_id, row.type)
        row = svc.set_enabled(conn, row, body.enabled)
        _audit(conn, principal, "schedule.enable" if body.enabled else "schedule.disable", row)
    return schedule_read(row)


@router.delete("/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: str, principal: PrincipalDep, app: AppDep) -> Response:
    """Delete the schedule; the tasks it created stay."""
    with app.db.transaction() as conn:
        row = svc.get_schedule(conn, schedule_id)
        require_on_task(conn, app.agents, principal, Action.schedule, row.agent_id, row.type)
        svc.delete_schedule(conn, row)
        _audit(conn, principal, "schedule.delete", row)
    return Response(status_code=204)


def _audit(conn: Any, principal: Principal, action: str, row: ScheduleRow) -> None:
    audit.record(conn, principal, action, format_schedule_id(row.id), name=row.name, agent_id=row.agent_id)
