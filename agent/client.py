"""The agent's HTTP client for the cloud: returns wire models, retries with backoff and jitter."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel

from wire.agents import AgentRegister, ClaimRequest, Heartbeat, HeartbeatReply, RegisterReply
from wire.tasks import Assignment, LogBatch, LogLine, TaskReport

log = logging.getLogger("tiangong.agent")
T = TypeVar("T")


class CloudUnavailable(Exception):
    """The cloud could not be reached or answered 5xx; worth retrying later."""


class Rejected(Exception):
    """The cloud refused the request (4xx); `next_seq` is set when it asks for a log resend."""

    def __init__(self, status: int, message: str, next_seq: int | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.next_seq = next_seq


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

    def __init__(self, server: str, token: str, agent_id: str) -> None:
        self.agent_id = agent_id
        self._server = server
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._session: aiohttp.ClientSession | None = None

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

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, path: str, body: BaseModel, *, timeout: float | None = None) -> Any:
        kwargs: dict[str, Any] = {"data": body.model_dump_json(exclude_none=True)}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout, connect=5)
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
        body = ClaimRequest(capacity=capacity, wait_s=wait_s)
        data = await self._post(f"/api/v1/agents/{self.agent_id}/claim", body, timeout=wait_s + 15)
        return [Assignment.model_validate(item) for item in data]

    async def heartbeat(self, tokens: dict[str, str], wait_s: float) -> HeartbeatReply:
        """Renew the leases of the attempts in `tokens` (task id -> task_token); wait up to wait_s for a cancel."""
        body = Heartbeat(running=list(tokens), tokens=tokens, wait_s=wait_s)
        data = await self._post(f"/api/v1/agents/{self.agent_id}/heartbeat", body, timeout=wait_s + 15)
        return HeartbeatReply.model_validate(data)

    async def post_logs(self, task_id: str, token: str, lines: list[LogLine]) -> int:
        data = await self._post(f"/api/v1/agent/tasks/{task_id}/logs", LogBatch(task_token=token, lines=lines))
        return int(data["next_seq"])

    async def post_result(self, task_id: str, report: TaskReport) -> None:
        await self._post(f"/api/v1/agent/tasks/{task_id}/result", report)


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
