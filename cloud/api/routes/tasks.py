"""Caller routes for tasks: create (async or sync), read, list, cancel, delete."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from cloud.api.deps import AdminAuth, DbDep, HubDep, SettingsDep
from cloud.db.engine import Database
from cloud.db.models import Task
from cloud.hub import Hub
from cloud.services import tasks as svc
from cloud.services.errors import NotFound
from cloud.services.present import task_read
from wire.tasks import TaskCreate, TaskList, TaskRead, TaskStatus

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], dependencies=[AdminAuth])


@router.post("", status_code=201, response_model=TaskRead, response_model_exclude_none=False)
async def create_task(
    body: TaskCreate,
    response: Response,
    db: DbDep,
    hub: HubDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskRead:
    """Queue a task; with `sync: true` wait until it ends or `timeout` seconds pass."""
    if idempotency_key and not body.request_id:
        body.request_id = idempotency_key
    with db.transaction() as s:
        task, created = svc.create_task(s, body, offline_after=settings.agent_offline_seconds)
    if not created:
        response.status_code = 200  # the same request_id: this is the task created before
    if body.sync:
        return await wait_until_final(db, hub, task.id or 0, body.timeout)
    return task_read(task)


async def wait_until_final(db: Database, hub: Hub, task_id: int, timeout: float) -> TaskRead:
    """The task once final, or as it stands after `timeout` with `sync_timed_out: true`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with hub.subscribe(f"task:{task_id}") as sub:
            with db.transaction() as s:
                task = s.get(Task, task_id)
            if task is None or TaskStatus(task.status).is_final:
                return task_read(task) if task else await _gone(task_id)
            remaining = deadline - loop.time()
            if remaining <= 0 or hub.closing:
                return task_read(task, sync_timed_out=True)
            await sub.wait(remaining)


async def _gone(task_id: int) -> TaskRead:
    raise NotFound(f"task not found: task-{task_id} (deleted while waiting)")


@router.get("", response_model=TaskList)
async def list_tasks(
    db: DbDep,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 10,
    agent_id: str | None = None,
    type: str | None = None,
    status: TaskStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> TaskList:
    """Tasks newest first, filtered; `{"list", "total", "page", "page_size"}`."""
    flt = svc.TaskFilter(agent_id=agent_id, type=type, status=status, since=since, until=until, q=q)
    with db.transaction() as s:
        rows, total = svc.list_tasks(s, flt, page, page_size)
        items = [task_read(t) for t in rows]
    return TaskList(items=items, total=total, page=page, page_size=page_size)


@router.get("/{task_id}", response_model=TaskRead)
async def get_task(task_id: str, db: DbDep) -> TaskRead:
    with db.transaction() as s:
        return task_read(svc.get_task(s, task_id))


@router.post("/{task_id}/cancel", response_model=TaskRead)
async def cancel_task(task_id: str, db: DbDep) -> TaskRead:
    """Cancel: a pending task ends at once; a running one is stopped by its agent (group killed)."""
    with db.transaction() as s:
        return task_read(svc.cancel_task(s, svc.get_task(s, task_id)))


@router.delete("/{task_id}", status_code=204)
async def delete_task(task_id: str, db: DbDep) -> Response:
    """Delete a finished task and its log."""
    with db.transaction() as s:
        svc.delete_task(s, svc.get_task(s, task_id))
    return Response(status_code=204)
