"""The agent's persistent channel to the cloud: one WebSocket carrying claims, heartbeats, log batches and
results as JSON frames, several in flight at once, with the same answers and errors as the HTTP routes
(CloudUnavailable, Rejected), so the rest of the agent does not know which transport it uses."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from agent.errors import CloudUnavailable, Rejected

log = logging.getLogger("tiangong.agent")

HELLO_TIMEOUT_SECONDS = 10.0
SILENT_PINGS = 3
"""A channel on which nothing, not even the cloud's ping, arrived for this many ping periods is dead."""


class ChannelRefused(Exception):
    """The cloud, or a proxy on the way, answered the upgrade with an HTTP status: use HTTP instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


@dataclass
class _Link:
    """One open WebSocket and the requests waiting for their answers on it."""

    ws: aiohttp.ClientWebSocketResponse
    max_frame: int
    silence: float | None = None
    """Seconds without any frame after which the link counts as dead (None: the cloud does not ping)."""
    waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None


class Channel:
    """Requests over the agent's WebSocket, connecting (again) on first use after a drop."""

    def __init__(self, session: aiohttp.ClientSession, agent_id: str) -> None:
        self._session = session
        self._path = f"/api/v1/agents/{agent_id}/channel"
        self._link: _Link | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly: kept here until done

    async def request(self, op: str, body: str, *, timeout: float, task_id: str | None = None, claim: int = 0) -> Any:
        """Send one request and wait for its answer: the `ok` payload, else Rejected (4xx) or
        CloudUnavailable (5xx, a dropped channel, no answer within `timeout`)."""
        link = await self._connected()
        rid = next(self._ids)
        frame = _frame(rid, op, body, task_id, claim)
        if len(frame) > link.max_frame:  # as the HTTP route's 413, without sending it
            raise Rejected(413, f"body: larger than the {link.max_frame}-byte limit for this route")
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        link.waiting[rid] = answer
        try:
            await link.ws.send_bytes(frame)
            async with asyncio.timeout(timeout):
                reply = await answer
        except TimeoutError:
            # No answer in time: the link may be dead without TCP knowing it. A new one is opened next time.
            self._drop(link, "no answer in time")
            raise CloudUnavailable(f"channel: no answer to {op} within {timeout:g} s") from None
        except asyncio.CancelledError:
            # The caller stopped waiting (an agent stopping abandons its claim): the cloud must not hand
            # this request tasks any more.
            self._cancel_remote(link, rid)
            raise
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            self._drop(link, str(exc))
            raise CloudUnavailable(f"channel: {type(exc).__name__}: {exc}") from exc
        finally:
            link.waiting.pop(rid, None)
        return _answer(reply)

    @property
    def open(self) -> bool:
        """A link is up: the cloud sees this agent through it (and its pings), so an idle agent need not beat."""
        return self._link is not None and not self._link.ws.closed

    async def _connected(self) -> _Link:
        link = self._link
        if link is not None and not link.ws.closed:
            return link
        async with self._lock:
            if self._link is None or self._link.ws.closed:
                self._link = await self._connect()
            return self._link

    async def _connect(self) -> _Link:
        try:
            ws = await self._session.ws_connect(
                self._path, autoping=True, max_msg_size=0, compress=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise ChannelRefused(exc.status, exc.message) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise CloudUnavailable(f"channel: {type(exc).__name__}: {exc}") from exc
        try:
            hello = await ws.receive(timeout=HELLO_TIMEOUT_SECONDS)
            greeting = orjson.loads(hello.data)["hello"]
            max_frame = int(greeting["max_frame_bytes"])
            ping = greeting.get("ping_seconds")
            silence = SILENT_PINGS * float(ping) if ping else None
        except (TimeoutError, ValueError, TypeError, KeyError) as exc:
            await ws.close()
            raise CloudUnavailable(f"channel: no greeting from the cloud ({type(exc).__name__})") from None
        link = _Link(ws, max_frame, silence)
        link.reader = asyncio.create_task(self._read(link), name="channel-reader")
        log.info("agent channel open")
        return link

    async def _read(self, link: _Link) -> None:
        """Hand each answer to the request waiting for it; when the link ends, fail every one still waiting."""
        why = "closed by the cloud"
        try:
            while True:
                try:
                    # The cloud's pings count: an idle channel carries one every ping_seconds.
                    message = await link.ws.receive(timeout=link.silence)
                except TimeoutError:
                    why = f"nothing from the cloud for {link.silence:g} s"
                    break
                if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    break
                try:
                    reply = orjson.loads(message.data)
                    waiter = link.waiting.get(reply["id"])
                except (ValueError, TypeError, KeyError):
                    log.warning("agent channel: unreadable frame from the cloud; ignored")
                    continue
                if waiter is not None and not waiter.done():
                    waiter.set_result(reply)
            if link.ws.close_code is not None and why == "closed by the cloud":
                why = f"closed by the cloud ({link.ws.close_code})"
        except Exception as exc:  # the socket failed under us
            why = f"{type(exc).__name__}: {exc}"
        finally:
            self._drop(link, why)

    def _drop(self, link: _Link, why: str) -> None:
        if self._link is link:
            self._link = None
            log.warning("agent channel dropped: %s", why)
        for waiter in link.waiting.values():
            if not waiter.done():
                waiter.set_exception(CloudUnavailable(f"channel: {why}"))
        if not link.ws.closed:
            self._spawn(_close(link.ws))

    def _cancel_remote(self, link: _Link, rid: int) -> None:
        if link.ws.closed:
            return
        frame = b'{"id":0,"op":"cancel","body":{"request":%d}}' % rid

        async def send() -> None:
            with contextlib.suppress(Exception):
                await link.ws.send_bytes(frame)

        self._spawn(send())

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.ws.close()
            if link.reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await link.reader


async def _close(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.close()


def _frame(rid: int, op: str, body: str, task_id: str | None, claim: int) -> bytes:
    """`{"id", "op", "task_id"?, "claim"?, "body"}` around the body the HTTP route would get (the id
    first, so that even a frame the cloud cannot parse is answered to its request)."""
    head = b'{"id":%d,"op":"%b"' % (rid, op.encode())
    if task_id is not None:
        head += b',"task_id":' + orjson.dumps(task_id)
    if claim:
        head += b',"claim":%d' % claim
    return head + b',"body":' + body.encode() + b"}"


def _answer(reply: dict[str, Any]) -> Any:
    if "ok" in reply:
        return reply["ok"]
    status = int(reply.get("status") or 500)
    if status >= 500:
        raise CloudUnavailable(f"channel: {status} {reply.get('error', '')}")
    raise Rejected(status, str(reply.get("error", "")), reply.get("next_seq"))
