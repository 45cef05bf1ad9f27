"""Caller routes for tasks: create (async or sync), read, list, cancel, delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from cloud.access import Principal
from cloud.api import agent_calls as calls
from cloud.api import fleet_runs
from cloud.api.deps import AppContext, AppDep, CallerAuth, PrincipalDep
from cloud.api.guard import GuardedRoute
from cloud.api.scopes import reach, require_create, require_on_task
from cloud.api.waits import wait_until_final
from cloud.policy import enforce
from cloud.services import audit, retries
from cloud.services import fleet as fleet_svc
from cloud.services import tasks as svc
from cloud.services.errors import BadRequest, Conflict
from cloud.services.present import run_read, task_read
from wire.credentials import Action
from wire.tasks import TaskCreate, TaskList, TaskRead, TaskStatus, format_task_id, parse_task_id

V = TypeVar("V")

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], dependencies=[CallerAuth], route_class=GuardedRoute)


@router.post("", status_code=201, response_model=TaskRead, response_model_exclude_none=False)
async def create_task(
    body: TaskCreate,
    response: Response,
    principal: PrincipalDep,
    app: AppDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskRead:
    """Queue a task; with `sync: true` wait until it ends or `timeout` seconds pass. An idempotency key
    (`request_id` or the `Idempotency-Key` header) repeated with the same task returns it (200); with a
    different task, 409."""
    key_name = "request_id"
    if idempotency_key and body.request_id and idempotency_key != body.request_id:
        raise BadRequest(
            f"Idempotency-Key header ({idempotency_key!r}) and request_id ({body.request_id!r}) disagree; "
            "send one of them, or the same key in both"
        )
    if idempotency_key and not body.request_id:
        body.request_id, key_name = idempotency_key, "Idempotency-Key"
    if body.agent_selector is not None:  # a fleet run (docs/fleet.md)
        await enforce(app.policy, body)
        return await fleet_runs.create_run(body, response, principal, app)
    task, created = await queue_task(app, principal, body, key_name)
    if not created:
        response.status_code = 200  # the same request_id: this is the task created before
    return await answer(app, task, body)


async def queue_task(
    app: AppContext, principal: Principal, body: TaskCreate, key_name: str
) -> tuple[svc.TaskRow, bool]:
    """The task `body` asks for, created (True) or, for a repeated idempotency key, the one created before
    (False). Shared with cloud.api.fast_create, which answers the plain case without FastAPI."""
    await enforce(app.policy, body)
    waiting = calls.waiting_claim(app, body.agent_id)  # before the transaction: it may check a token
    try:
        with app.db.transaction() as conn:
            require_create(conn, app.agents, principal, body, answered=body.sync)
            task, created = svc.create_task(
                conn,
                body,
                agents=app.agents,
                offline_after=app.settings.agent_offline_seconds,
                sealer=app.sealer,
                default_expires_in=app.settings.task_expires_seconds,
                key_name=key_name,
            )
            if not created:  # the task made before with this key: it is read, so `read` on it is needed
                require_on_task(conn, app.agents, principal, Action.read, task.agent_id, task.type)
            if created:
                target = format_task_id(task.id)
                audit.record(conn, principal, "task.create", target, agent_id=body.agent_id, type=body.type)
                if waiting is not None:  # last: the agent's waiting claim takes the task in this transaction
                    task = calls.hand_to(app, conn, waiting, task.id) or task
    finally:
        if waiting is not None:
            calls.put_back(app, waiting)
    return task, created


async def answer(app: AppContext, task: svc.TaskRow, body: TaskCreate) -> TaskRead:
    """What the create answers: the task as it stands after the create (pending, or running when the agent's
    waiting claim took it, or failed when it could not be handed out), or with `sync: true` once it ends (or
    times out)."""
    if body.sync:
        return await wait_until_final(app, task.id, body.timeout, current=task)
    return task_read(task)


@router.get("", response_model=TaskList)
async def list_tasks(
    principal: PrincipalDep,
    app: AppDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int | None, Query(ge=1, le=100, description="Default 10.")] = None,
    agent_id: str | None = None,
    type: str | None = None,
    status: TaskStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    page_size_camel: Annotated[
        int | None, Query(alias="pageSize", ge=1, le=100, description="Seed 003's name for page_size.")
    ] = None,
    node_id: Annotated[str | None, Query(alias="nodeId", description="Seed 003's name for agent_id.")] = None,
    parent_id: Annotated[str | None, Query(max_length=40, description="A fleet run's children.")] = None,
    children: Annotated[
        bool | None, Query(description="Fleet runs' children too (default: only with agent_id or parent_id).")
    ] = None,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> TaskList:
    """Tasks newest first, filtered; `{"list", "total", "page", "page_size", "total_exact"}`. `after=task-N`
    starts after that task (the next page of a long list: the last id of this one). A scoped token sees
    the tasks of the agents and types it reaches. Seed 003's `pageSize` and `nodeId` are taken as page_size
    and agent_id; a parameter the list does not take (e.g. `name`) is a 400."""
    principal.require(Action.read)
    page_size = _one_of("page_size", page_size, "pageSize", page_size_camel) or 10
    agent_id = _one_of("agent_id", agent_id, "nodeId", node_id)
    after_n = parse_task_id(after) if after is not None else None
    if after is not None and after_n is None:
        raise BadRequest(f"after: not a task id: {after!r}; expected task-<n>, e.g. the last id of a page")
    flt = svc.TaskFilter(agent_id=agent_id, type=type, status=status, since=since, until=until, q=q)
    flt.fleet = fleet_svc.list_condition(parent_id, children, by_agent=agent_id is not None)
    with app.db.transaction() as conn:
        flt.agent_ids, flt.types = reach(conn, principal)
        found = svc.list_tasks(conn, flt, page, page_size, after=after_n, count_limit=app.settings.list_count_limit)
    # Masking a page of tasks' params is linear but can reach a second for large params: off the loop.
    items = await run_in_threadpool(lambda: [task_read(t) for t in found.rows])
    return TaskList(items=items, total=found.total, page=page, page_size=page_size, total_exact=found.total_exact)


def _one_of(name: str, value: V | None, alias: str, aliased: V | None) -> V | None:
    """A parameter sent under its own name or under a seed's alias; both, disagreeing, is a 400."""
    if value is not None and aliased is not None and value != aliased:
        raise BadRequest(f"{alias}: is another name for {name}, which says otherwise; send one of them")
    return value if value is not None else aliased


@router.get("/{task_id}", response_model=TaskRead)
async def get_task(task_id: str, principal: PrincipalDep, app: AppDep) -> TaskRead:
    with app.db.transaction() as conn:
        task = svc.get_task(conn, task_id)
        if not fleet_svc.is_run(task):
            require_on_task(conn, app.agents, principal, Action.read, task.agent_id, task.type)
    if fleet_svc.is_run(task):  # the run's aggregate (docs/fleet.md)
        return await run_in_threadpool(fleet_runs.show_run, app, task, principal)
    return await run_in_threadpool(task_read, task)


@router.post("/{task_id}/cancel", response_model=TaskRead)
async def cancel_task(task_id: str, principal: PrincipalDep, app: AppDep) -> TaskRead:
    """Cancel: a pending task ends at once; a running one is stopped by its agent (group killed)."""
    with app.db.transaction() as conn:
        task = svc.get_task(conn, task_id)
        if fleet_svc.is_run(task):  # the run and its unfinished children (docs/fleet.md)
            fleet_svc.require_on_run(conn, app.agents, principal, task, Action.cancel)
            task = fleet_svc.cancel_run(conn, task)
            audit.record(conn, principal, "task.cancel", format_task_id(task.id), agent_id=task.agent_id)
            return run_read(task, *fleet_svc.aggregate(conn, task.id))
        require_on_task(conn, app.agents, principal, Action.cancel, task.agent_id, task.type)
        task = svc.cancel_task(conn, task)
        audit.record(conn, principal, "task.cancel", format_task_id(task.id), agent_id=task.agent_id)
        return task_read(task)


@router.post("/{task_id}/retry", response_model=TaskRead)
async def retry_task(task_id: str, principal: PrincipalDep, app: AppDep) -> TaskRead:
    """A new attempt of a finished task (any final status), queued at once for the same agent. It does not
    use up the task's automatic retries; 409 while it is pending or running, or when its agent is offline."""
    with app.db.transaction() as conn:
        task = svc.get_task(conn, task_id)
        if fleet_svc.is_run(task):
            raise Conflict(f"task {task_id}: a fleet run is not retried; retry its children, or create the run again")
        require_on_task(conn, app.agents, principal, Action.retry, task.agent_id, task.type)
        task = retries.retry_task(conn, task, agents=app.agents, offline_after=app.settings.agent_offline_seconds)
        audit.record(conn, principal, "task.retry", format_task_id(task.id), agent_id=task.agent_id)
        return task_read(task)


@router.delete("/{task_id}", status_code=204)
async def delete_task(task_id: str, principal: PrincipalDep, app: AppDep) -> Response:
    """Delete a finished task and its log."""
    with app.db.transaction() as conn:
        task = svc.get_task(conn, task_id)
        if fleet_svc.is_run(task):  # with its children (docs/fleet.md)
            fleet_svc.require_on_run(conn, app.agents, principal, task, Action.delete)
            fleet_svc.delete_run(conn, task)
        else:
            require_on_task(conn, app.agents, principal, Action.delete, task.agent_id, task.type)
            svc.delete_task(conn, task)
        audit.record(conn, principal, "task.delete", format_task_id(task.id), agent_id=task.agent_id)
    return Response(status_code=204)
