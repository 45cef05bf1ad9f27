"""Every request gets an id: the caller's `X-Request-ID` when it is a sane one, else a new one. It is sent back
in the answer's `X-Request-ID` and carried by every log record of the request (wire.logs), with the task
id when the path names a task, so one grep finds what a request did. The access log (a record per
request: method, path, status, milliseconds) is written here too, for callers' requests by default: the
agents' long-polls and log batches would drown it (TIANGONG_ACCESS_LOG=all|callers|off).

A logged path is `loggable_path`: a token pasted into it (`GET /api/v1/tokens/tgp_...` for the token's id) is
masked, and uvicorn's own WebSocket handshake lines lose their query string (a browser client may put a
token there, though no route reads one), so no log line carries a secret.

A plain ASGI middleware, not Starlette's BaseHTTPMiddleware: it runs on every agent request too, and must
cost microseconds."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wire.credentials import PREFIXES
from wire.logs import REQUEST_ID, TASK_ID
from wire.secrets import MASK

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_TASK_IN_PATH = re.compile(r"/tasks/(task-\d{1,19}|\d{1,19})(?:/|$)")
_AGENT_PATH = re.compile(r"/api/v1/(agent/|agents/[^/]+/(claim|heartbeat|channel)$|agents/register$)")
_TOKEN = re.compile("(" + "|".join(PREFIXES.values()) + ")[A-Za-z0-9_-]{8,}")
MAX_LOGGED_PATH = 1024
"""A longer path is logged cut: a caller must not fill the log with one request."""
access = logging.getLogger("tiangong.access")

AccessLog = Literal["all", "callers", "off"]


class RequestIds:
    def __init__(self, app: ASGIApp, access_log: AccessLog = "callers") -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == HEADER), b"")
        # A caller's id is echoed only when it is short and plain: it lands in logs and headers.
        raw = given if _SANE.fullmatch(given) else os.urandom(8).hex().encode()
        request_token = REQUEST_ID.set(raw.decode())
        found = _TASK_IN_PATH.search(scope["path"])
        task_token = TASK_ID.set(found.group(1) if found else None)

        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, raw)]
            elif message["type"] == "websocket.http.response.start":
                status = message["status"]  # a refused handshake: 401, 403, 404
            elif message["type"] == "websocket.accept":
                status = 101
            await send(message)

        logged = self.access_log == "all" or (self.access_log == "callers" and _AGENT_PATH.match(scope["path"]) is None)
        started = time.perf_counter() if logged else 0.0
        try:
            # A socket's messages pass unwrapped unless its line is logged (the agents' channels are not).
            await self.app(scope, receive, send_with_id if scope["type"] == "http" or logged else send)
        finally:
            if logged:
                ms = (time.perf_counter() - started) * 1000
                method = scope.get("method", "WEBSOCKET")
                access.info("%s %s %s %.1f ms", method, loggable_path(scope["path"]), status or "-", ms)
            REQUEST_ID.reset(request_token)
            TASK_ID.reset(task_token)


def loggable_path(path: str) -> str:
    """The path as a log line shows it: tokens masked, cut at MAX_LOGGED_PATH characters."""
    if len(path) > MAX_LOGGED_PATH:
        path = path[:MAX_LOGGED_PATH] + "..."
    return _TOKEN.sub(lambda m: m.group(1) + MASK, path)


class _HandshakeLines(logging.Filter):
    """uvicorn logs each WebSocket handshake as `<client> - "WebSocket <path?query>" <outcome>`: the path
    is masked as ours is, and the query string replaced by a mask."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and '"WebSocket %s"' in record.msg and isinstance(record.args, tuple):
            args = list(record.args)
            if len(args) >= 2 and isinstance(args[1], str):
                path, sep, _ = args[1].partition("?")
                args[1] = loggable_path(path) + (f"?{MASK}" if sep else "")
                record.args = tuple(args)
        return True


def mask_server_log() -> None:
    """Install the handshake lines' mask on uvicorn's logger (once per process)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HandshakeLines) for f in logger.filters):
        logger.addFilter(_HandshakeLines())
