"""JSON-RPC 2.0 at /api/rpc (seed 000), over HTTP POST and over a WebSocket (NodeGet's clients speak
WebSocket): task_create_task, task_create_task_blocking, task_query, task_delete. Same services, tokens and
scopes as REST; the token travels in `params.token`, or else in an `Authorization: Bearer` header (of the
POST, or of the WebSocket's handshake).

Seed 000's scope rules: creating needs `create` on the target agent and type (blocking: `read` too); a
query or delete without a `uuid` condition needs a token reaching every agent, without a `type`
condition one reaching every type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cloud.access import Principal
from cloud.api.deps import AppContext, bearer_token
from cloud.api.guard import GuardedRoute
from cloud.api.jsonrpc import (
    ANSWER_TOO_LARGE,
    FORBIDDEN,
    INVALID_PARAMS,
    UNAUTHORIZED,
    Limits,
    Method,
    RpcError,
    dispatch,
)
from cloud.api.rpc_socket import Caller, serve_socket
from cloud.api.scopes import require_create, require_on_task
from cloud.api.waits import wait_until_final
from cloud.policy import enforce
from cloud.services import audit, task_query
from cloud.services import tasks as svc
from cloud.services.errors import BadRequest, Conflict, Forbidden, NotFound
from cloud.services.present import rpc_event_response, rpc_record
from executors.registry import known_types
from wire.credentials import Action
from wire.tasks import TaskCreate, format_task_id

router = APIRouter(tags=["json-rpc"], route_class=GuardedRoute)

AGENT_NOT_CONNECTED = 104
TIMED_OUT = 999
MAX_BLOCKING_MS = 300_000


class _Auth(BaseModel):
    token: str | None = None
    """Optional when the request carries an `Authorization: Bearer` header."""


class CreateParams(_Auth):
    target_uuid: str = Field(min_length=1)
    task_type: dict[str, Any]


class BlockingParams(CreateParams):
    timeout_ms: int = Field(30_000, ge=1, le=MAX_BLOCKING_MS)


class QueryBody(BaseModel):
    condition: list[dict[str, Any]] = Field(default_factory=list)


class QueryParams(_Auth):
    task_data_query: QueryBody = Field(default_factory=QueryBody)


class DeleteParams(_Auth):
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    # No conditions select every finished task: that takes an explicit `"all": true`, never an empty list.
    all: bool = Field(False, strict=True)


@router.post("/api/rpc", summary="JSON-RPC 2.0 endpoint (single or batch)")
async def rpc(request: Request) -> Response:
    app: AppContext = request.app.state.ctx
    answer = await dispatch(await request.body(), _methods(app, bearer_token(request.headers)), _limits(app))
    return Response(status_code=204) if answer is None else Response(answer, media_type="application/json")


@router.websocket("/api/rpc")
async def rpc_socket(websocket: WebSocket) -> None:
    """JSON-RPC over a WebSocket: each text or binary message is one request or batch, answered by a
    message when it ends (a notification gets none). Calls run concurrently, up to MAX_IN_FLIGHT, so a
    blocking create does not hold up a query sent after it: match answers by `id`.

    An `Authorization` header is checked before the handshake (a bad one is refused with 401/403 and
    `{"error": ...}`); without one the socket opens, since seed 000's clients send `params.token` in each
    call, but it must show a valid token within rpc_auth_timeout_seconds (rpc_socket.py)."""
    app: AppContext = websocket.app.state.ctx
    header = bearer_token(websocket.headers)
    if header is not None:
        try:
            _caller(app, header)
        except HTTPException as exc:
            await websocket.send_denial_response(JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code))
            return
    caller = Caller(known=header is not None)
    methods = _methods(app, header, on_caller=lambda: setattr(caller, "known", True))
    await websocket.accept()
    await serve_socket(app, websocket, methods, _limits(app), caller)


def _caller(app: AppContext, token: bytes) -> Principal:
    """The caller token's principal: 401 for a missing, wrong or expired token, 403 for an agent's."""
    principal = app.credentials.resolve(token)
    if not principal.is_caller:
        raise HTTPException(403, "a caller token is needed (the admin token or tgp_...)")
    return principal


def _limits(app: AppContext) -> Limits:
    return Limits(
        max_batch=app.settings.rpc_max_batch,
        max_depth=app.settings.max_json_depth,
        max_answer_bytes=app.settings.rpc_max_answer_bytes,
    )


def _methods(
    app: AppContext, header_token: bytes | None = None, on_caller: Callable[[], None] | None = None
) -> dict[str, Method]:
    """The methods, each checking its call's token; `on_caller` runs when one passes (the socket's limit)."""

    def check(token: str | None) -> Principal:
        if token is not None:
            raw = token.encode("utf-8", "surrogatepass")
        elif header_token is not None:
            raw = header_token
        else:
            raise RpcError(UNAUTHORIZED, "Unauthorized: no token; send params.token or an Authorization: Bearer header")
        try:
            principal = _caller(app, raw)
        except HTTPException as exc:
            raise RpcError(UNAUTHORIZED, f"Unauthorized: {exc.detail}") from None
        if on_caller is not None:
            on_caller()
        return principal

    async def create(params: dict[str, Any]) -> dict[str, int]:
        p = CreateParams.model_validate(params)
        return {"id": await _create(app, check(p.token), p, answered=False)}

    async def create_blocking(params: dict[str, Any]) -> dict[str, Any]:
        p = BlockingParams.model_validate(params)
        n = await _create(app, check(p.token), p, answered=True)
        task = await wait_until_final(app, n, p.timeout_ms / 1000)
        if task.sync_timed_out:
            raise RpcError(TIMED_OUT, f"Task {n} timed out after {p.timeout_ms}ms")
        with app.db.transaction() as conn:
            row = svc.fetch(conn, n)
        if row is None:
            raise RpcError(INVALID_PARAMS, f"Task {n} was deleted while waiting")
        return rpc_event_response(row)

    async def query(params: dict[str, Any]) -> list[dict[str, Any]]:
        p = QueryParams.model_validate(params)
        principal = check(p.token)
        try:
            with app.db.transaction() as conn:
                _within_scope(app, conn, principal, Action.read, p.task_data_query.condition)
                rows = _bad_params(
                    task_query.query_tasks, conn, p.task_data_query.condition, app.settings.rpc_max_answer_bytes
                )
        except task_query.TooLarge as exc:
            raise RpcError(
                ANSWER_TOO_LARGE, f"Answer too large: {exc}; narrow the query (more conditions, a smaller limit)"
            ) from exc
        return await run_in_threadpool(lambda: [rpc_record(r) for r in rows])

    async def delete(params: dict[str, Any]) -> dict[str, Any]:
        p = DeleteParams.model_validate(params)
        principal = check(p.token)
        with app.db.transaction() as conn:
            _within_scope(app, conn, principal, Action.delete, p.conditions)
            deleted = _bad_params(task_query.delete_tasks, conn, p.conditions, p.all)
            shown = p.conditions if len(orjson.dumps(p.conditions)) <= 2048 else f"{len(p.conditions)} conditions"
            audit.record(conn, principal, "task.delete", "task_delete", conditions=shown, deleted=deleted)
        return {"success": True, "deleted": deleted, "condition_count": len(p.conditions)}

    return {
        "task_create_task": create,
        "task_create_task_blocking": create_blocking,
        "task_query": query,
        "task_delete": delete,
    }


def _allowed(check: Any, *args: Any, **kwargs: Any) -> None:
    """Run a scope check; its refusal becomes the JSON-RPC Forbidden error."""
    try:
        check(*args, **kwargs)
    except Forbidden as exc:
        raise RpcError(FORBIDDEN, f"Forbidden: {exc.message}") from None


def _within_scope(app: AppContext, conn: Any, principal: Principal, action: Action, conditions: Any) -> None:
    """Seed 000: without a `uuid` condition the token must reach every agent, without a `type` condition
    every type; with them, the agent and type named."""
    _allowed(principal.require, action)
    named = [c for c in conditions if isinstance(c, dict) and len(c) == 1] if isinstance(conditions, list) else []
    agents = list(dict.fromkeys(c["uuid"] for c in named if isinstance(c.get("uuid"), str)))
    types = list(dict.fromkeys(c["type"] for c in named if isinstance(c.get("type"), str)))
    # Each pair is a scope check (the agent's may read the database): bounded before any is made.
    pairs, limit = max(1, len(agents)) * max(1, len(types)), app.settings.rpc_max_scope_checks
    if pairs > limit:
        raise RpcError(
            INVALID_PARAMS,
            f"Invalid params: conditions name {len(agents)} distinct uuids and {len(types)} distinct types, "
            f"{pairs} pairs to check against the token's scope, past the limit of {limit} (rpc_max_scope_checks); "
            "AND-ed, more than one of each matches nothing",
        )
    if not agents and not principal.all_agents:
        raise RpcError(FORBIDDEN, f"Forbidden: without a uuid condition {action.value} needs a global-scope token")
    if not types and not principal.all_types:
        raise RpcError(FORBIDDEN, f"Forbidden: without a type condition {action.value} needs a token for every type")
    # None: no such condition (the checks above covered it). Never "*": an agent may be named that.
    for agent_id in agents or [None]:
        for type_name in types or [None]:
            if agent_id is None:
                _allowed(principal.require, action, type_name=type_name)
            else:
                _allowed(require_on_task, conn, app.agents, principal, action, agent_id, type_name)


def _bad_params(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except BadRequest as exc:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {exc.message}") from exc


async def _create(app: AppContext, principal: Principal, p: CreateParams, *, answered: bool) -> int:
    req = to_task_create(p.target_uuid, p.task_type)
    try:
        await enforce(app.policy, req)
        with app.db.transaction() as conn:
            _allowed(require_create, conn, app.agents, principal, req, answered=answered)
            row, _ = svc.create_task(
                conn,
                req,
                agents=app.agents,
                offline_after=app.settings.agent_offline_seconds,
                sealer=app.sealer,
                default_expires_in=app.settings.task_expires_seconds,
            )
            target = format_task_id(row.id)
            audit.record(conn, principal, "task.create", target, agent_id=req.agent_id, type=req.type)
    except Forbidden as exc:
        raise RpcError(FORBIDDEN, f"Forbidden: {exc.message}") from exc
    except (NotFound, Conflict) as exc:
        if "agent_id:" in exc.message and ("offline" in exc.message or "not found" in exc.message):
            raise RpcError(
                AGENT_NOT_CONNECTED, f"Error sending task event: Agent {p.target_uuid} is not connected"
            ) from exc
        raise RpcError(INVALID_PARAMS, f"Invalid params: {exc.message}") from exc
    except BadRequest as exc:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {exc.message}") from exc
    return int(row.id)


def to_task_create(agent_id: str, task_type: dict[str, Any]) -> TaskCreate:
    """Seed 000's TaskEventType -> the REST task: `{"ping": host}`, `{"execute": {cmd, args}}`,
    `{"http_request": {...}}`, `{"web_shell": {url, terminal_id}}`, or any type as
    `{"<type>": {"command", "params", "file_id", "env"}}`."""
    if len(task_type) != 1:
        raise RpcError(INVALID_PARAMS, "Invalid params: task_type must have exactly one key, the task type")
    ((kind, body),) = task_type.items()
    if kind == "ping":
        host = body if isinstance(body, str) else (body or {}).get("host", "") if isinstance(body, dict) else ""
        return TaskCreate(agent_id=agent_id, type="ping", command=str(host))
    if kind in ("execute", "http_request", "web_shell"):
        if not isinstance(body, dict):
            raise RpcError(INVALID_PARAMS, f"Invalid params: task_type.{kind} must be an object")
        if kind == "web_shell" and not body.get("terminal_id"):
            raise RpcError(INVALID_PARAMS, "Invalid params: task_type.web_shell.terminal_id is required (a UUID)")
        return TaskCreate(agent_id=agent_id, type=kind, params=body)
    if kind not in known_types():
        raise RpcError(
            INVALID_PARAMS, f"Invalid params: task_type {kind!r} is not supported; known: {', '.join(known_types())}"
        )
    if not isinstance(body, dict):
        raise RpcError(INVALID_PARAMS, f"Invalid params: task_type.{kind} must be an object with command/params")
    fields = {k: body[k] for k in ("command", "params", "file_id", "env", "exec_timeout") if k in body}
    return TaskCreate(agent_id=agent_id, type=kind, **fields)
