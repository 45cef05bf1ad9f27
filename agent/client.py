"""The agent's client for the cloud: returns wire models, retries with backoff and jitter. Claims,
heartbeats, log batches and results go over the agent channel (a WebSocket, agent/channel.py) when the
cloud offers it, else over long-poll HTTP; the errors are the same either way."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
from pydantic import BaseModel

from agent.channel import Channel, ChannelRefused
from agent.errors import CloudUnavailable, Rejected
from wire.agents import AgentRegister, ClaimRequest, Heartbeat, HeartbeatReply, RegisterReply
from wire.tasks import Assignment, LogBatch, LogLine, TaskReport

__all__ = ["Backoff", "CloudClient", "CloudUnavailable", "Piggyback", "Rejected", "retrying"]

log = logging.getLogger("tiangong.agent")
T = TypeVar("T")

CHANNEL_RETRY_SECONDS = 300.0
"""After the channel was refused (or kept failing), HTTP is used for this long before the channel is tried again."""
CHANNEL_FAILURES = 3
"""Channels that drop (or cannot open) this many times in a row, with no answer between, count as refused."""
CHANNEL_CLAIM_WAIT_SECONDS = 300.0
"""A claim's wait on the channel: nothing is held open for it but a request id, and the cloud caps it
(channel_claim_wait_max_seconds); a dead link is noticed by its silence, not by the claim's end."""


class Piggyback(Protocol):
    """The agent's slots, as a result's piggybacked claim sees them (agent/loop.py)."""

    def offer(self, task_id: str) -> int:
        """How many tasks the result of `task_id` may ask for (its freed slot and any other free one)."""
        ...

    def took(self, offered: int, tasks: list[Assignment]) -> None:
        """The answer: start `tasks` (at most `offered`) and give back the rest of the offer."""
        ...


class Backoff:
    """Exponential backoff with full jitter, so a fleet does not hammer a recovering cloud in step."""

    def __init__(self, base: float = 0.2, cap: float = 10.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class CloudClient:
    """One connection pool to the cloud, shared by every task of this agent process.

    aiohttp rather than httpx: the agent's own HTTP client dominated its CPU, and aiohttp roughly
    halved it (bench/roundtrip.py; DESIGN §6).
    """

    def __init__(
        self, server: str, token: str, agent_id: str, channel: Literal["auto", "websocket", "http"] = "http"
    ) -> None:
        self.agent_id = agent_id
        self._server = server
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._session: aiohttp.ClientSession | None = None
        self._mode = channel
        self._channel: Channel | None = None
        self._channel_off_until = 0.0  # loop time: HTTP only until then (auto, after a refusal)
        self._channel_failures = 0
        self.piggyback: Piggyback | None = None
        """When set, a result offers the agent's free slots and its answer brings the next tasks."""

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop, as aiohttp requires
            self._session = aiohttp.ClientSession(
                self._server,
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=30, connect=5),
            )
        return self._session

    def use_token(self, token: str) -> None:
        """Send `token` from now on (the agent token received at registration)."""
        self._headers["Authorization"] = f"Bearer {token}"
        if self._session is not None:
            self._session.headers["Authorization"] = f"Bearer {token}"
        if self._channel is not None:  # opened with the old token: the next request opens another
            old, self._channel = self._channel, None
            asyncio.get_running_loop().create_task(old.aclose())

    def route(self, path: str) -> tuple[str, dict[str, str]]:
        """`path` on the cloud and the Authorization header of the agent's token, read at call time (the
        token changes at registration). For the agent's own connections to the cloud (web_shell's relay)."""
        return self._server.rstrip("/") + path, {"Authorization": self._headers["Authorization"]}

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.aclose()
        if self._session is not None:
            await self._session.close()

    @property
    def channel_open(self) -> bool:
        """Requests go over a channel that is up right now."""
        return self._channel is not None and self._channel_wanted() and self._channel.open

    @property
    def transport(self) -> str:
        """`websocket` while requests go over the channel, else `http`."""
        return "websocket" if self._channel_wanted() else "http"

    def _channel_wanted(self) -> bool:
        if self._mode == "http":
            return False
        return self._mode == "websocket" or asyncio.get_running_loop().time() >= self._channel_off_until

    async def _call(
        self, op: str, path: str, body: BaseModel, *, timeout: float = 30, task_id: str | None = None, claim: int = 0
    ) -> Any:
        """One agent-protocol request: over the channel when it is wanted and open, else over HTTP."""
        if self._channel_wanted():
            if self._channel is None:
                self._channel = Channel(self._http(), self.agent_id)
            try:
                answer = await self._channel.request(
                    op, body.model_dump_json(exclude_none=True), timeout=timeout, task_id=task_id, claim=claim
                )
            except ChannelRefused as exc:
                self._channel_refused(exc)
            except CloudUnavailable:
                self._channel_failed()
                raise
            else:
                self._channel_failures = 0
                return answer
        return await self._post(path, body, timeout=timeout, claim=claim)

    def _channel_refused(self, exc: ChannelRefused) -> None:
        """The upgrade was answered with an HTTP status (an older cloud, the channel turned off, a proxy that
        does not pass WebSockets, a refused token): HTTP for a while (auto), else the same error as HTTP's."""
        if self._mode == "websocket":
            if exc.status in (401, 403):
                raise Rejected(exc.status, f"channel refused: {exc.message}") from None
            raise CloudUnavailable(f"channel refused: {exc}") from None
        log.warning("the cloud refused the agent channel (%s); using HTTP for %.0f s", exc, CHANNEL_RETRY_SECONDS)
        self._channel_off_until = asyncio.get_running_loop().time() + CHANNEL_RETRY_SECONDS

    def _channel_failed(self) -> None:
        self._channel_failures += 1
        if self._mode == "auto" and self._channel_failures >= CHANNEL_FAILURES:
            log.warning(
                "the agent channel failed %d times in a row; using HTTP for %.0f s",
                self._channel_failures,
                CHANNEL_RETRY_SECONDS,
            )
            self._channel_failures = 0
            self._channel_off_until = asyncio.get_running_loop().time() + CHANNEL_RETRY_SECONDS

    async def _post(self, path: str, body: BaseModel, *, timeout: float | None = None, claim: int = 0) -> Any:
        kwargs: dict[str, Any] = {"data": body.model_dump_json(exclude_none=True)}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout, connect=5)
        if claim:
            kwargs["headers"] = {"Tiangong-Claim": str(claim)}
        try:
            async with self._http().post(path, **kwargs) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CloudUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return _decode(status, raw)

    async def file_info(self, file_id: str) -> dict[str, Any]:
        """A file's record (name, size, md5)."""
        try:
            async with self._http().get(f"/api/v1/files/{file_id}") as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CloudUnavailable(f"{type(exc).__name__}: {exc}") from exc
        payload = _decode(status, raw)
        return dict(payload)

    async def download(self, file_id: str, dest: Path) -> str:
        """Stream a file's content to `dest`; returns the MD5 of what arrived."""
        md5 = hashlib.md5(usedforsecurity=False)
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=60)
        try:
            async with self._http().get(f"/api/v1/files/{file_id}/content", timeout=timeout) as resp:
                if resp.status != 200:
                    _decode(resp.status, await resp.read())
                fh = await asyncio.to_thread(dest.open, "wb")
                try:
                    async for chunk in resp.content.iter_chunked(1024 * 1024):
                        md5.update(chunk)
                        await asyncio.to_thread(fh.write, chunk)  # disk writes off the agent's loop
                finally:
                    await asyncio.to_thread(fh.close)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CloudUnavailable(f"download of {file_id}: {type(exc).__name__}: {exc}") from exc
        return md5.hexdigest()

    async def register(self, reg: AgentRegister) -> RegisterReply:
        return RegisterReply.model_validate(await self._post("/api/v1/agents/register", reg))

    async def claim(self, capacity: int, wait_s: float) -> list[Assignment]:
        """Up to `capacity` tasks, waiting up to wait_s for one; on the channel, which is open anyway, up to
        CHANNEL_CLAIM_WAIT_SECONDS (the cloud caps it), so an idle agent renews its claim seldom."""
        if wait_s > 0 and self._channel_wanted():
            wait_s = max(wait_s, CHANNEL_CLAIM_WAIT_SECONDS)
        body = ClaimRequest(capacity=capacity, wait_s=wait_s)
        data = await self._call("claim", f"/api/v1/agents/{self.agent_id}/claim", body, timeout=wait_s + 15)
        return [Assignment.model_validate(item) for item in data]

    async def heartbeat(self, tokens: dict[str, str], wait_s: float) -> HeartbeatReply:
        """Renew the leases of the attempts in `tokens` (task id -> task_token); wait up to wait_s for a cancel."""
        body = Heartbeat(running=list(tokens), tokens=tokens, wait_s=wait_s)
        data = await self._call("heartbeat", f"/api/v1/agents/{self.agent_id}/heartbeat", body, timeout=wait_s + 15)
        return HeartbeatReply.model_validate(data)

    async def post_logs(self, task_id: str, token: str, lines: list[LogLine]) -> int:
        body = LogBatch(task_token=token, lines=lines)
        data = await self._call("logs", f"/api/v1/agent/tasks/{task_id}/logs", body, task_id=task_id)
        return int(data["next_seq"])

    async def post_result(self, task_id: str, report: TaskReport) -> None:
        """Report the outcome; with a piggyback set, the answer also brings the agent's next tasks."""
        offered = self.piggyback.offer(task_id) if self.piggyback is not None else 0
        tasks: list[Assignment] = []
        try:
            path = f"/api/v1/agent/tasks/{task_id}/result"
            data = await self._call("result", path, report, task_id=task_id, claim=offered)
            if offered and isinstance(data, dict):
                tasks = [Assignment.model_validate(item) for item in data.get("assignments") or []]
        finally:
            if offered and self.piggyback is not None:
                self.piggyback.took(offered, tasks)


def _decode(status: int, raw: bytes) -> Any:
    """The JSON body of a 2xx answer; CloudUnavailable for 5xx, Rejected (with next_seq) for 4xx."""
    if status >= 500:
        raise CloudUnavailable(f"HTTP {status}")
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = {"error": raw[:200].decode(errors="replace")}
    if status >= 400:
        payload = payload if isinstance(payload, dict) else {}
        raise Rejected(status, str(payload.get("error", "")), payload.get("next_seq"))
    return payload


async def retrying(call: Callable[[], Awaitable[T]], what: str, stop: asyncio.Event | None = None) -> T:
    """Repeat `call` while the cloud is unavailable (backoff + jitter); Rejected propagates at once."""
    backoff = Backoff()
    while True:
        try:
            return await call()
        except CloudUnavailable as exc:
            if stop is not None and stop.is_set():
                raise
            delay = backoff.next_delay()
            log.warning("%s: cloud unavailable (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
