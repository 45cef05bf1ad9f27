"""JSON-RPC over a WebSocket: calls run concurrently on one socket, and a socket nobody uses is closed.

Two limits keep sockets from being held for nothing: one that has not shown a valid caller token (no
`Authorization` header at the handshake, and no call yet with a valid `params.token`) is closed
`rpc_auth_timeout_seconds` after it opened, whatever it sends; any other is closed after
`rpc_idle_timeout_seconds` with no message and no call running. docs/api.md (JSON-RPC 2.0).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from cloud.api.deps import AppContext
from cloud.api.jsonrpc import PARSE_ERROR, Limits, Method, dispatch

MAX_IN_FLIGHT = 16
"""Calls one WebSocket may have running at once; the next message is read when one ends (backpressure)."""
IDLE = 4008
"""Close code of a socket idle for rpc_idle_timeout_seconds (as the web shell's idle close)."""
UNAUTHENTICATED = 4401
"""Close code of a socket that showed no valid token within rpc_auth_timeout_seconds (4000 + HTTP 401)."""


@dataclass
class Caller:
    """Whether the socket has shown a valid caller token: set at the handshake, or by a call's check."""

    known: bool


async def serve_socket(
    app: AppContext, websocket: WebSocket, methods: dict[str, Method], limits: Limits, caller: Caller
) -> None:
    """Answer the accepted socket's messages until the client leaves, a limit closes it, or the cloud stops."""
    loop = asyncio.get_running_loop()
    opened = last = loop.time()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    sending = asyncio.Lock()
    calls: set[asyncio.Task[None]] = set()

    async def answer(body: bytes) -> None:
        nonlocal last
        try:
            reply = await dispatch(body, methods, limits)
            if reply is not None:
                async with sending:
                    await websocket.send_text(reply.decode())
        except (WebSocketDisconnect, RuntimeError):
            pass  # the caller left: nothing to answer
        finally:
            last = loop.time()  # idle is counted from the end of the last call, not from when it was sent
            slots.release()

    def deadline() -> tuple[float, int, str] | None:
        """When the socket is closed unless something happens first, with the close code and reason."""
        if calls:
            return None  # a call running is never idle (an unauthenticated one ends at once)
        auth_s, idle_s = app.settings.rpc_auth_timeout_seconds, app.settings.rpc_idle_timeout_seconds
        if not caller.known and auth_s:
            # Counted from the open, not from the last message: sending junk does not keep it open.
            why = f"no valid token within {auth_s:g} s (rpc_auth_timeout_seconds): send Authorization or params.token"
            return opened + auth_s, UNAUTHENTICATED, why
        if idle_s:
            return last + idle_s, IDLE, f"idle for {idle_s:g} s (rpc_idle_timeout_seconds)"
        return None

    receiving: asyncio.Future[Message] = asyncio.ensure_future(websocket.receive())
    try:
        while not app.hub.closing:
            end = deadline()
            timeout = None if end is None else max(0.0, end[0] - loop.time())
            # Wake on a message, on a call ending (the idle clock starts then), or at the deadline.
            waits: set[asyncio.Future[Any]] = {receiving, *calls}
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if receiving not in done:
                if not done and end is not None and deadline() == end:
                    await _close(websocket, end[1], end[2])
                    return
                continue
            message = receiving.result()
            if message["type"] == "websocket.disconnect":
                break
            last = loop.time()
            body = message.get("bytes") or (message.get("text") or "").encode("utf-8", "surrogatepass")
            limit = app.settings.max_request_bytes
            if len(body) > limit:
                refusal = f"Parse error: a message of {len(body)} bytes passes the limit of {limit} (max_request_bytes)"
                async with sending:
                    await websocket.send_text(orjson.dumps(_error_doc(PARSE_ERROR, refusal)).decode())
            else:
                await slots.acquire()
                call = asyncio.create_task(answer(body))
                calls.add(call)
                call.add_done_callback(calls.discard)
            receiving = asyncio.ensure_future(websocket.receive())
    except WebSocketDisconnect:
        pass
    finally:
        receiving.cancel()
        for call in calls:
            call.cancel()
        await asyncio.gather(receiving, *calls, return_exceptions=True)
    if app.hub.closing:
        await _close(websocket, 1001, "the cloud is shutting down")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code, reason.encode()[:120].decode("utf-8", "ignore"))  # a reason is <= 123 bytes


def _error_doc(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
