"""The task routes' side of fleet runs (a task with `agent_selector`, docs/fleet.md): create, read, wait."""

from __future__ import annotations

from fastapi import Response

from cloud.access import Principal
from cloud.api.deps import AppContext
from cloud.api.waits import wait_until_final
from cloud.services import audit
from cloud.services import fleet as svc
from cloud.services.present import run_read
from cloud.services.tasks import get_task
from cloud.services.transitions import TaskRow
from wire.credentials import Action
from wire.tasks import TaskCreate, TaskRead, format_task_id


def launcher(app: AppContext) -> svc.Launcher:
    return svc.Launcher(agents=app.agents, offline_after=app.settings.agent_offline_seconds)


async def create_run(body: TaskCreate, response: Response, principal: Principal, app: AppContext) -> TaskRead:
    """POST /api/v1/tasks with `agent_selector`: the parent and its first children, in one transaction.
    The token needs `create` (and `read` for a sync call, `files:read` for a file) on the type; the
    targets are only agents it reaches."""
    principal.require(Action.create, type_name=body.type)
    if body.sync:
        principal.require(Action.read, type_name=body.type)
    if body.file_id:
        principal.require(Action.files_read)
    with app.db.transaction() as conn:
        task, created = svc.create_run(
            conn,
            body,
            principal=principal,
            sealer=app.sealer,
            launcher=launcher(app),
            default_expires_in=app.settings.task_expires_seconds,
            max_targets=app.settings.fleet_max_targets,
        )
        if created:
            targets = task.fleet["targets"]
            audit.record(conn, principal, "task.create", format_task_id(task.id), type=body.type, agents=len(targets))
        else:
            svc.require_on_run(conn, app.agents, principal, task, Action.read)
    if not created:
        response.status_code = 200
    if body.sync:
        waited = await wait_until_final(app, task.id, body.timeout, current=task)
        return read_run(app, task.id, sync_timed_out=waited.sync_timed_out)
    return read_run(app, task.id)


def read_run(app: AppContext, task_id: int, *, sync_timed_out: bool = False) -> TaskRead:
    """A run's parent with its aggregate, read now."""
    with app.db.transaction() as conn:
        task = get_task(conn, format_task_id(task_id))  # 404 when deleted meanwhile
        return run_read(task, *svc.aggregate(conn, task_id), sync_timed_out=sync_timed_out)


def show_run(app: AppContext, task: TaskRow, principal: Principal) -> TaskRead:
    """GET /api/v1/tasks/{id} of a parent (the caller has checked nothing yet)."""
    with app.db.transaction() as conn:
        svc.require_on_run(conn, app.agents, principal, task, Action.read)
        return run_read(task, *svc.aggregate(conn, task.id))
