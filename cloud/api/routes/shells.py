"""WebSocket routes of web_shell tasks: the browser's side (a caller token allowed `create` on the task's
agent and the `web_shell` type, and either the token that created the task or an admin token) and the
agent's side (its agent token and the attempt's task token).

Every check runs before the handshake is accepted: a refused socket gets an HTTP status with
`{"error": ...}` and never opens. A browser cannot set an Authorization header on a WebSocket, so its token
may come as the subprotocol `bearer.<token>` next to `tiangong.v1` (the one the cloud selects). A second
browser, or a task that is not running or pending, is refused after the handshake with a close code and a
reason a page can show. docs/web-shell.md.
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, HTTPException, WebSocket
from fastapi.responses import JSONResponse

from cloud.access import Principal
from cloud.api.deps import AppContext, bearer_token
from cloud.api.scopes import require_on_task
from cloud.api.shell_relay import BUSY, relay_of
from cloud.services import audit, shells
from cloud.services.errors import ServiceError
from wire.credentials import Action, TokenKind
from wire.tasks import format_task_id

router = APIRouter(tags=["web shell"])

SUBPROTOCOL = "tiangong.v1"
BEARER_PREFIX = "bearer."


class Refused(Exception):
    """A socket refused before its handshake: the HTTP status and the error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@router.websocket("/api/v1/tasks/{task_id}/shell")
async def browser_shell(websocket: WebSocket, task_id: str) -> None:
    """Attach to a web_shell task's terminal (the browser's side)."""
    app: AppContext = websocket.app.state.ctx
    relay = relay_of(websocket.app.state, app.settings, app.hub)
    try:
        principal = _principal(app, _browser_token(websocket))
        if not principal.is_caller:
            raise Refused(403, "this route takes a caller token (the admin token or an API token, tgp_...)")
        with app.db.transaction() as conn:
            task = shells.browser_side(conn, task_id)
            require_on_task(conn, app.agents, principal, Action.create, task.agent_id, shells.SHELL_TYPE)
            shells.require_creator(conn, task, principal)
            audit.record(conn, principal, "task.shell", format_task_id(task.id), agent_id=task.agent_id)
    except (Refused, ServiceError) as exc:
        await _refuse(websocket, exc)
        return
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    shown = format_task_id(task.id)
    # Claimed after the accept, so a second browser is told why in a close reason a page can show.
    session = relay.claim(int(task.id), shown, "browser", websocket)
    if session is None:
        with contextlib.suppress(Exception):
            await websocket.close(BUSY, f"another browser is attached to {shown}; one at a time")
        return
    await relay.serve_browser(int(task.id), session, websocket)


@router.websocket("/api/v1/agent/tasks/{task_id}/shell")
async def agent_shell(websocket: WebSocket, task_id: str) -> None:
    """Connect a running web_shell task's terminal (the agent's side): `Authorization: Bearer <agent token>`
    and `X-Task-Token: <the attempt's task token>`."""
    app: AppContext = websocket.app.state.ctx
    relay = relay_of(websocket.app.state, app.settings, app.hub)
    try:
        principal = _principal(app, bearer_token(websocket.headers))
        if principal.kind is not TokenKind.agent:
            raise Refused(403, "this route takes an agent token (tga_...)")
        with app.db.transaction() as conn:
            task = shells.agent_side(conn, task_id, websocket.headers.get("x-task-token", ""), principal.agent_id)
        if relay.busy(int(task.id), "agent"):
            raise Refused(409, f"the agent's side of {format_task_id(task.id)} is already connected")
    except (Refused, ServiceError) as exc:
        await _refuse(websocket, exc)
        return
    await websocket.accept()
    # busy() above refuses the usual second connection with a 409; two racing through the accept are
    # settled here, where checking and claiming are one step.
    session = relay.claim(int(task.id), format_task_id(task.id), "agent", websocket)
    if session is None:
        with contextlib.suppress(Exception):
            await websocket.close(BUSY, f"the agent's side of {format_task_id(task.id)} is already connected")
        return
    await relay.serve_agent(int(task.id), session, websocket)


def _principal(app: AppContext, token: bytes | None) -> Principal:
    if token is None:
        raise Refused(
            401, "missing token: send Authorization: Bearer <token>, or the subprotocols tiangong.v1 and bearer.<token>"
        )
    try:
        principal: Principal = app.credentials.resolve(token)
    except HTTPException as exc:
        raise Refused(exc.status_code, str(exc.detail)) from None
    return principal


def _browser_token(websocket: WebSocket) -> bytes | None:
    """The Authorization header's token, else the `bearer.<token>` subprotocol's (never the URL: it is
    logged by proxies and kept in browser history)."""
    token = bearer_token(websocket.headers)
    if token is not None:
        return token
    for offered in websocket.scope.get("subprotocols") or []:
        if offered.startswith(BEARER_PREFIX) and len(offered) > len(BEARER_PREFIX):
            return offered[len(BEARER_PREFIX) :].encode("latin-1", "replace")
    return None


async def _refuse(websocket: WebSocket, exc: Refused | ServiceError) -> None:
    """Refuse the handshake with an HTTP answer: the status and `{"error": message}` of `exc` (or a bare
    403 where the server cannot send one)."""
    status = exc.status if isinstance(exc, Refused) else exc.status_code
    message = exc.message
    try:
        await websocket.send_denial_response(JSONResponse({"error": message}, status_code=status))
    except RuntimeError:
        await websocket.close(1008, message[:120])
