"""The web_shell relay: pairs the agent's socket and one browser's socket of a running task, in this
process, and passes their messages on as they are (binary: terminal bytes; text: controls).

Both sockets of one task must reach the same cloud replica: with several replicas behind a load balancer,
route `/api/v1/tasks/*/shell` and `/api/v1/agent/tasks/*/shell` of a task to one replica (or run one
replica for shells). A browser whose agent side is on another replica waits `shell_attach_wait_seconds`
and is told so. docs/web-shell.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from cloud.settings import CloudSettings

BROWSER_LEFT = 4000
"""Close code the agent is given when the browser leaves (a normal end of the session)."""
IDLE = 4008
"""Close code of an idle session (the agent's own idle limit uses it too)."""
BUSY = 4409
"""Close code a second browser gets: one browser at a time."""
NO_AGENT = 4504
"""Close code of a browser whose agent side did not connect in time."""
WATCH_S = 1.0
"""How often a session looks at its idle limit and at the cloud shutting down."""


@dataclass
class Session:
    """The two sockets of one web_shell task and how their session ends."""

    task_id: str
    agent: WebSocket | None = None
    browser: WebSocket | None = None
    agent_here: asyncio.Event = field(default_factory=asyncio.Event)
    browser_here: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    last: float = 0.0
    """Loop time of the last message either way."""
    watchdog: asyncio.Task[None] | None = None


class ShellRelay:
    """The sessions of this process, by task number."""

    def __init__(self, settings: CloudSettings, closing: Any) -> None:
        self.settings = settings
        self._closing = closing  # the hub: `closing` turns true when the cloud shuts down
        self.sessions: dict[int, Session] = {}

    def session(self, n: int, task_id: str) -> Session:
        """The task's session, made on first use with its watchdog."""
        s = self.sessions.get(n)
        if s is None:
            s = self.sessions[n] = Session(task_id, last=asyncio.get_running_loop().time())
            s.watchdog = asyncio.create_task(self._watch(n, s))
        return s

    def busy(self, n: int, side: str) -> bool:
        """Whether the task's `side` ("agent" or "browser") is already connected here."""
        s = self.sessions.get(n)
        return s is not None and not s.ended.is_set() and getattr(s, side) is not None

    def claim(self, n: int, task_id: str, side: str, ws: WebSocket) -> Session | None:
        """Make `ws` the task's `side` ("agent" or "browser"), or None when that side is taken. The check
        and the claim run with no await between them, so of two sockets racing for one side (two browsers
        attaching at once) exactly one wins on this event loop; the route closes the other."""
        if self.busy(n, side):
            return None
        s = self.session(n, task_id)
        setattr(s, side, ws)
        return s

    async def serve_agent(self, n: int, s: Session, ws: WebSocket) -> None:
        """The agent's socket, accepted and claimed: its messages go to the browser once one is here."""
        s.agent_here.set()
        try:
            await self._pump(s, ws, lambda: s.browser, s.browser_here, from_agent=True)
        finally:
            self._forget(n, s)

    async def serve_browser(self, n: int, s: Session, ws: WebSocket) -> None:
        """The browser's socket, accepted and claimed: waits for the agent's side, then its messages go to
        the agent."""
        task_id = s.task_id
        s.browser_here.set()
        try:
            wait = self.settings.shell_attach_wait_seconds
            if not await _within(s.agent_here, s.ended, wait):
                if not s.ended.is_set():
                    await self._end(
                        s,
                        NO_AGENT,
                        f"the agent's side of {task_id} did not connect within {wait:g} s "
                        "(shell_attach_wait_seconds): is the agent running, and on a cluster, does this replica "
                        "serve both sides?",
                    )
                return
            await self._pump(s, ws, lambda: s.agent, s.agent_here, from_agent=False)
        finally:
            self._forget(n, s)

    async def _pump(self, s: Session, ws: WebSocket, peer: Any, peer_here: asyncio.Event, *, from_agent: bool) -> None:
        """Messages of `ws` to the other side until either ends; the end is passed on to the other side."""
        limit = self.settings.shell_max_message_bytes
        loop = asyncio.get_running_loop()
        while not s.ended.is_set():
            try:
                message = await ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                message = {"type": "websocket.disconnect", "code": 1006}
            if message["type"] == "websocket.disconnect":
                await self._end(s, *_passed_on(message, from_agent))
                return
            data: bytes | str = message.get("bytes") or message.get("text") or b""
            size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
            if size > limit:
                await self._end(s, 1009, f"a message of {size} bytes passes shell_max_message_bytes ({limit})")
                return
            s.last = loop.time()
            # The agent speaks first (the prompt) and may do so before a browser is here: hold the
            # message (and so the agent's socket) until one is, or the session ends.
            if not await _within(peer_here, s.ended, None):
                return
            target: WebSocket | None = peer()
            if target is None:
                return
            try:
                if isinstance(data, bytes):
                    await target.send_bytes(data)
                else:
                    await target.send_text(data)
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass  # the other side's own pump sees its end

    async def _end(self, s: Session, code: int, reason: str) -> None:
        """End the session once: both sockets closed, the agent told why the browser left and the other way."""
        if s.ended.is_set():
            return
        s.ended.set()
        reason = reason.encode()[:120].decode("utf-8", "ignore")  # a close reason is at most 123 bytes
        for ws in (s.agent, s.browser):
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close(code, reason)

    async def _watch(self, n: int, s: Session) -> None:
        """End the session when nothing passed for shell_idle_max_seconds, or the cloud shuts down."""
        loop = asyncio.get_running_loop()
        idle = self.settings.shell_idle_max_seconds
        while not s.ended.is_set():
            if self._closing.closing:
                await self._end(s, 1001, "the cloud is shutting down")
            elif loop.time() - s.last >= idle:
                await self._end(s, IDLE, f"idle for {idle:g} s (shell_idle_max_seconds)")
            else:
                await _within(s.ended, s.ended, min(WATCH_S, s.last + idle - loop.time()))

    def _forget(self, n: int, s: Session) -> None:
        if self.sessions.get(n) is s and s.ended.is_set():
            del self.sessions[n]
            if s.watchdog is not None:
                s.watchdog.cancel()


def _passed_on(message: Message, from_agent: bool) -> tuple[int, str]:
    """The close the other side gets when one side's socket closed with `message`."""
    if not from_agent:
        return BROWSER_LEFT, "the browser left"
    code = int(message.get("code") or 1000)
    reason = str(message.get("reason") or "")
    if code in (1000,) or 3000 <= code <= 4999:
        return code, reason or "the shell session ended"
    return 1011, f"the agent's side closed (code {code})"


async def _within(event: asyncio.Event, ended: asyncio.Event, timeout: float | None) -> bool:
    """True once `event` is set; False when `ended` is set first or `timeout` seconds pass."""
    if event.is_set():
        return True
    waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(ended.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return event.is_set()


def relay_of(state: Any, settings: CloudSettings, hub: Any) -> ShellRelay:
    """The process's relay, made on first use (one per app)."""
    relay: ShellRelay | None = getattr(state, "shell_relay", None)
    if relay is None:
        relay = state.shell_relay = ShellRelay(settings, hub)
    return relay
