"""`POST /api/v1/tasks` in its plain form, answered without FastAPI's per-request machinery.

A caller's create is the cloud's busiest request. Around the route's own work FastAPI matches the path
against every route, solves the dependencies, reads the body through the guard's stream, validates the
returned model again and builds a Response: about a quarter of the cloud's CPU on a sync round trip
(docs/performance.md). This middleware takes only the plain case: a caller's token, a small JSON body
that arrived whole, no query string, no `Idempotency-Key` header, no fleet run. It runs the route's own
steps (`queue_task`, `answer`: the same code) and renders any error through the app's own exception
handlers, so the answers are the route's.

Everything else, and anything the plain case cannot judge the way the route does (a bad token, a body
that does not parse or validate, one still arriving), goes to the FastAPI route untouched, with the part
of the body already read handed on first: every refusal is written in one place, the route's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.access import Principal
from cloud.api.deps import AppContext, bearer_token
from cloud.api.guard import is_json, stalled
from cloud.api.routes.tasks import answer, queue_task
from cloud.api.strict_json import loads_checked
from wire.tasks import TaskCreate

PATH = "/api/v1/tasks"
MAX_BODY_BYTES = 64 * 1024
"""A larger body goes through the route: the guard streams it against the limits and parses it off the loop."""

_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastCreate:
    """A pure ASGI middleware, inside RequestIds (request ids, access log) and outside FastAPI's router."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        ctx: AppContext = scope["app"].state.ctx
        headers = Headers(scope=scope)
        principal = _plain_caller(ctx, headers)
        if principal is None:
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        try:
            async with asyncio.timeout(ctx.settings.request_idle_timeout_seconds):
                read.append(await receive())
        except TimeoutError:
            await _render(scope, receive, send, stalled(ctx.settings.request_idle_timeout_seconds))
            return
        body = _plain_body(ctx, read[0])
        if body is None:
            await self.app(scope, _replaying(read, receive), send)
            return
        try:
            task, created = await queue_task(ctx, principal, body, "request_id")
            read_back = await answer(ctx, task, body)
            payload = read_back.model_dump_json().encode()
        except Exception as exc:
            await _render(scope, receive, send, exc)
            return
        raw = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 201 if created else 200, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


def _plain_caller(ctx: AppContext, headers: Headers) -> Principal | None:
    """The caller behind a plain create's token, or None when the route should judge the request."""
    if "idempotency-key" in headers or not is_json(headers.get("content-type")):
        return None
    declared = headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > min(MAX_BODY_BYTES, ctx.settings.max_request_bytes):
        return None
    token = bearer_token(headers)
    if token is None:
        return None
    try:
        principal = ctx.credentials.resolve(token)
    except Exception:  # a refused token: the route answers it
        return None
    return principal if principal.is_caller else None


def _plain_body(ctx: AppContext, message: Message) -> TaskCreate | None:
    """The whole body as a task, or None when it is still arriving, does not parse or validate, or is a fleet run."""
    if message["type"] != "http.request" or message.get("more_body", False):
        return None
    try:
        body = TaskCreate.model_validate(loads_checked(message.get("body", b""), ctx.settings.max_json_depth))
    except Exception:  # JsonRefused, ValidationError, or anything else: the route answers it as it would
        return None
    return body if body.agent_selector is None else None


def _replaying(read: list[Message], receive: Receive) -> Receive:
    """`receive` with the messages already taken from it handed out first."""
    pending = list(read)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _render(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer `exc` as the app's exception handlers answer it when the route raises it."""
    handlers: dict[Any, Any] = scope["app"].exception_handlers
    handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
    if handler is None:
        raise exc
    response = await handler(Request(scope, receive), exc)
    await response(scope, receive, send)
