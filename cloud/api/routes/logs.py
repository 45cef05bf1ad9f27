"""A task's log: JSON pages, raw text, or followed live as Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from cloud.api.deps import AppContext, AppDep, CallerAuth, PrincipalDep, recheck
from cloud.api.guard import GuardedRoute
from cloud.api.scopes import require_on_task
from cloud.services import tasks as svc
from cloud.services.logs import LineRow, list_logs
from cloud.services.present import log_line_dicts, log_page_json
from wire.credentials import Action
from wire.tasks import LogRead, TaskStatus

router = APIRouter(prefix="/api/v1/tasks", tags=["logs"], dependencies=[CallerAuth], route_class=GuardedRoute)

KEEPALIVE_SECONDS = 15.0
PAGE = 1000


@router.get("/{task_id}/logs", response_model=list[LogRead])
async def get_logs(
    task_id: str,
    request: Request,
    principal: PrincipalDep,
    app: AppDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Return lines with id > after.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    follow: bool = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response | list[LogRead]:
    """Lines in order. `follow=true` streams until the task ends (SSE, or raw text with Accept: text/plain)."""
    with app.db.transaction() as conn:
        task = svc.get_task(conn, task_id)
        require_on_task(conn, app.agents, principal, Action.read, task.agent_id, task.type)
        n = task.id
    resume = (last_event_id or "").strip()
    if resume.isascii() and resume.isdigit() and len(resume) < 19:
        after = max(after, int(resume))
    as_text = "text/plain" in request.headers.get("accept", "")
    if follow:
        media = "text/plain; charset=utf-8" if as_text else "text/event-stream"
        stream = _follow(app, n, after, as_text, request)
        return StreamingResponse(
            stream, media_type=media, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
    with app.db.transaction() as conn:
        rows = list_logs(conn, n, after, limit)
    if as_text:
        return PlainTextResponse("".join(r[5] + "\n" for r in rows))
    return Response(log_page_json(rows, n), media_type="application/json")


async def _follow(app: AppContext, task_id: int, after: int, as_text: bool, request: Request) -> AsyncIterator[str]:
    """Yield lines as they are stored; end with the final status. Never holds a session while waiting.
    A token revoked while it follows ends the stream."""
    quiet = 0.0
    while True:
        try:
            recheck(request)
        except HTTPException:
            return
        with app.hub.subscribe(f"logs:{task_id}", f"task:{task_id}") as sub:
            with app.db.transaction() as conn:
                # The task before its lines: a task seen final then has all its lines in the read after.
                task = svc.fetch(conn, task_id)
                rows = list_logs(conn, task_id, after, PAGE)
            if rows:
                # One chunk per page: a write per line made a follower of a busy log fall behind it.
                yield "".join(r[5] + "\n" for r in rows) if as_text else _sse_page(rows, task_id)
                after = rows[-1][0]
                continue
            if task is None or TaskStatus(task.status).is_final:
                yield _end(task, as_text)
                return
            if app.hub.closing:
                return  # the server is stopping; the client resumes with Last-Event-ID
            # Re-read at least every recheck_seconds (a wake-up from another replica may have been lost);
            # an SSE comment now and then keeps proxies from closing a quiet stream.
            step = min(KEEPALIVE_SECONDS, app.settings.recheck_seconds)
            if await sub.wait(step):
                quiet = 0.0
            else:
                quiet += step
                if quiet >= KEEPALIVE_SECONDS and not as_text:
                    quiet = 0.0
                    yield ": keepalive\n\n"


def _sse_page(rows: list[LineRow], task_id: int) -> str:
    """Each line as an SSE `log` event whose data is the line as GET .../logs shows it."""
    return "".join(
        _sse(orjson.dumps(line, option=orjson.OPT_UTC_Z).decode(), event="log", id=line["id"])
        for line in log_line_dicts(rows, task_id)
    )


def _sse(data: str, *, event: str, id: int | None = None) -> str:
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _end(task: svc.TaskRow | None, as_text: bool) -> str:
    status = task.status if task else "deleted"
    if as_text:
        return ""
    payload = {
        "status": status,
        "exit_code": task.exit_code if task else None,
        "error": task.error if task else "",
    }
    return _sse(json.dumps(payload), event="end")
