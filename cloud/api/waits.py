"""Waiting for a task to end without holding a database session: woken in-process by the hub."""

from __future__ import annotations

import asyncio

from cloud.api.deps import AppContext
from cloud.services import tasks as svc
from cloud.services.errors import NotFound
from cloud.services.present import task_read
from wire.tasks import TaskRead, TaskStatus


async def wait_until_final(
    app: AppContext, task_id: int, timeout: float, current: svc.TaskRow | None = None
) -> TaskRead:
    """The task once final, or as it stands after `timeout` with `sync_timed_out: true`.

    `current` is the row the caller just read in the same turn of the event loop, so it is still
    fresh; the final row usually arrives with the wake-up, so the database is read only as a fallback.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    task = current
    while True:
        with app.hub.subscribe(f"task:{task_id}") as sub:
            if task is None:
                with app.db.reading() as conn:
                    task = svc.fetch(conn, task_id)
            if task is None or TaskStatus(task.status).is_final:
                return task_read(task) if task else await _gone(task_id)
            remaining = deadline - loop.time()
            if remaining <= 0 or app.hub.closing:
                return task_read(task, sync_timed_out=True)
            # Re-read at least every recheck_seconds: a wake-up from another replica may have been lost.
            await sub.wait(min(remaining, app.settings.recheck_seconds))
            task = sub.payload  # the final row when the result was stored by this process, else re-read


async def _gone(task_id: int) -> TaskRead:
    raise NotFound(f"task not found: task-{task_id} (deleted while waiting)")
