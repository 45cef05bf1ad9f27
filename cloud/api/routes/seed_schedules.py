"""Seed 001's routes, kept for its clients: `POST /api/tasks {name, command, server_id, cron_expr}` saves a
schedule of a shell command, and `GET /api/tasks` lists schedules in the seed's shape. `server_id` is the
seed's integer server id: the agent whose id is that number written out (`1` -> agent `"1"`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import AppDep, CallerAuth, PrincipalDep
from cloud.api.guard import GuardedRoute
from cloud.api.routes.schedules import save_new
from cloud.api.scopes import reach
from cloud.services import schedules as svc
from cloud.services.errors import BadRequest, ServiceError
from cloud.services.present_schedules import seed_item
from wire.credentials import Action
from wire.schedules import ScheduleCreate, SeedTaskCreate, TaskTemplate, next_fire

router = APIRouter(
    prefix="/api/tasks", tags=["seed 001 (schedules)"], dependencies=[CallerAuth], route_class=GuardedRoute
)


@router.post("", status_code=200)
async def create_seed_task(body: SeedTaskCreate, principal: PrincipalDep, app: AppDep) -> dict[str, Any]:
    """Seed 001: a shell command on server `server_id`, run on `cron_expr` (`@once`: one run, at once).
    Saved as a schedule (GET /api/v1/schedules shows it); each run is a task whose cron_source is `name`."""
    try:
        next_fire(" ".join(body.cron_expr.split()), "UTC", datetime.now(UTC))
    except ValueError as exc:
        raise BadRequest(f"cron_expr: {exc}") from None
    task = TaskTemplate(agent_id=str(body.server_id), type="shell", command=body.command)
    try:
        row = await save_new(app, principal, ScheduleCreate(name=body.name, cron=body.cron_expr, task=task))
    except ServiceError as exc:
        exc.message = exc.message.replace("task.agent_id:", "server_id:", 1)  # the field as this body names it
        raise
    return seed_item(row)


@router.get("")
async def list_seed_tasks(
    principal: PrincipalDep,
    app: AppDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 10,
    server_id: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[int | None, Query(ge=0, le=1, description="1 enabled, 0 disabled.")] = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    created_by: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    """Seed 001's list: `{"list", "total", "page", "page_size"}`; `start_time`/`end_time` bound the last run."""
    principal.require(Action.read)
    flt = svc.ScheduleFilter(
        agent_id=server_id,
        enabled=None if status is None else bool(status),
        start_time=start_time,
        end_time=end_time,
        name=name,
        created_by=created_by,
    )
    with app.db.transaction() as conn:
        flt.agent_ids, flt.types = reach(conn, principal)
        rows, total = svc.list_schedules(conn, flt, page, page_size)
    items = await run_in_threadpool(lambda: [seed_item(r) for r in rows])
    return {"list": items, "total": total, "page": page, "page_size": page_size}
