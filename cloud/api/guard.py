"""Limits before work: every route checks its token, then reads its body within a size cap and an idle
timeout, then parses it strictly, before FastAPI parses or validates anything.

FastAPI reads and parses a JSON body before it resolves dependencies, so a route's token check used to
run after a 30 MB body had been read and parsed. `GuardedRoute` runs the route's auth dependencies
first, reads the body itself, and leaves the parsed document where FastAPI looks for it, so nothing is
parsed twice.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from cloud.api.deps import AUTH_CHECKS
from cloud.api.strict_json import OFFLOAD_BYTES, JsonRefused, loads_checked, loads_storable
from cloud.settings import CloudSettings


class BodyKind(enum.Enum):
    caller = "caller"
    agent = "agent"
    rpc = "rpc"


def _kind(route: APIRoute) -> BodyKind:
    if route.path == "/api/rpc":
        return BodyKind.rpc
    if "agent protocol" in (route.tags or []):
        return BodyKind.agent
    return BodyKind.caller


def body_limit(settings: CloudSettings, kind: BodyKind) -> int:
    """The largest body a route of this kind accepts."""
    return settings.max_agent_request_bytes if kind is BodyKind.agent else settings.max_request_bytes


class GuardedRoute(APIRoute):
    """An APIRoute that authorises, caps and strictly parses before FastAPI's own body handling."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = [d.dependency for d in self.dependencies if d.dependency in AUTH_CHECKS]
        kind = _kind(self)
        reads_body = self.body_field is not None or kind is BodyKind.rpc
        known_query = _query_names(self.dependant)

        async def guarded(request: Request) -> Response:
            for check in checks:
                await check(request)
            _refuse_unknown_query(request, known_query)
            _refuse_nul(request)
            if reads_body and request.method in ("POST", "PUT", "PATCH"):
                await _read_body(request, kind)
            return await handler(request)

        return guarded


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route takes: its own and its dependencies', by the name a client sends."""
    names: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        names.update(field.alias for field in current.query_params)
        pending.extend(current.dependencies)
    return frozenset(names)


def _refuse_unknown_query(request: Request, known: frozenset[str]) -> None:
    """A query parameter the route does not take is a 400 naming it, never silently ignored: a client
    sending `pageSize=3` or `name=x` must learn that they did nothing."""
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = f"this route takes {', '.join(sorted(known))}" if known else "this route takes none"
        raise HTTPException(400, f"{unknown[0][:100]}: unknown query parameter; {takes}")


def _refuse_nul(request: Request) -> None:
    """A NUL in a path or query value cannot be compared with a stored text on PostgreSQL: a 400 naming it."""
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if isinstance(value, str) and "\x00" in value:
            raise HTTPException(400, f"{name}: contains a NUL character (\\u0000)")


async def _read_body(request: Request, kind: BodyKind) -> None:
    settings: CloudSettings = request.app.state.ctx.settings
    body = await read_capped(
        request, body_limit(settings, kind), settings.request_idle_timeout_seconds, settings.min_body_rate_bytes
    )
    request._body = body
    if kind is BodyKind.rpc or not body or not is_json(request.headers.get("content-type")):
        return  # JSON-RPC answers a bad document in its own error shape; FastAPI refuses a non-JSON body
    parse = loads_storable if kind is BodyKind.agent else loads_checked
    try:
        if len(body) > OFFLOAD_BYTES:
            value = await run_in_threadpool(parse, body, settings.max_json_depth)
        else:
            value = parse(body, settings.max_json_depth)
    except JsonRefused as exc:
        raise HTTPException(400, str(exc)) from None
    request._json = value


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI reads a body without a content type as JSON
    main = content_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/") and main.endswith("+json"))


def too_large(limit: int) -> HTTPException:
    # The client may still be sending; closing the connection spares reading the rest.
    return HTTPException(
        413, f"body: larger than the {limit}-byte limit for this route", headers={"Connection": "close"}
    )


async def idle_bounded(request: Request, idle_timeout: float, min_rate: int) -> AsyncIterator[bytes]:
    """The body's parts as they arrive; 408 when the client sends nothing for `idle_timeout` seconds or,
    after that long, averages less than `min_rate` bytes/s (a client dripping a byte now and then would
    otherwise hold its connection, and a place under max_connections, as long as it likes); 400 when it
    goes away."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise stalled(idle_timeout) from None
        except ClientDisconnect:
            raise HTTPException(400, "body: the client went away before sending it all") from None
        received += len(chunk)
        elapsed = loop.time() - started
        if elapsed > idle_timeout and received < min_rate * elapsed:
            raise slow(f"arriving slower than {min_rate} bytes/s")
        yield chunk


def slow(why: str) -> HTTPException:
    return HTTPException(408, f"body: {why}; request dropped", headers={"Connection": "close"})


def stalled(idle_timeout: float) -> HTTPException:
    """The 408 for a body of which nothing arrived for `idle_timeout` seconds."""
    return slow(f"nothing received for {idle_timeout:g} s")


async def read_capped(request: Request, limit: int, idle_timeout: float, min_rate: int) -> bytes:
    """The whole body, refused (413) as soon as it passes `limit` bytes, or (408) when the client stalls
    for `idle_timeout` seconds between parts."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in idle_bounded(request, idle_timeout, min_rate):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
