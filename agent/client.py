"""The agent's HTTP client for the cloud: returns wire models, retries with backoff and jitter."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from wire.agents import AgentRegister, ClaimRequest, Heartbeat, HeartbeatReply, RegisterReply
from wire.tasks import Assignment, LogLine, TaskReport

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
    """One connection pool to the cloud, shared by every task of this agent process."""

    def __init__(self, server: str, token: str, agent_id: str) -> None:
        self.agent_id = agent_id
        self._http = httpx.AsyncClient(
            base_url=server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> Any:
        try:
            resp = await self._http.post(path, json=body, timeout=timeout or httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as exc:
            raise CloudUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 500:
            raise CloudUnavailable(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            try:
                payload = resp.json()
            except ValueError:
                payload = {"error": resp.text}
            raise Rejected(resp.status_code, str(payload.get("error", "")), payload.get("next_seq"))
        return resp.json()

    async def register(self, reg: AgentRegister) -> RegisterReply:
        return RegisterReply.model_validate(await self._post("/api/v1/agents/register", reg.model_dump()))

    async def claim(self, capacity: int, wait_s: float) -> list[Assignment]:
        body = ClaimRequest(capacity=capacity, wait_s=wait_s).model_dump()
        data = await self._post(f"/api/v1/agents/{self.agent_id}/claim", body, timeout=wait_s + 15)
        return [Assignment.model_validate(item) for item in data]

    async def heartbeat(self, running: list[str], wait_s: float) -> HeartbeatReply:
        body = Heartbeat(running=running, wait_s=wait_s).model_dump()
        data = await self._post(f"/api/v1/agents/{self.agent_id}/heartbeat", body, timeout=wait_s + 15)
        return HeartbeatReply.model_validate(data)

    async def post_logs(self, task_id: str, token: str, lines: list[LogLine]) -> int:
        body = {"task_token": token, "lines": [ln.model_dump(mode="json", exclude_none=True) for ln in lines]}
        data = await self._post(f"/api/v1/agent/tasks/{task_id}/logs", body)
        return int(data["next_seq"])

    async def post_result(self, task_id: str, report: TaskReport) -> None:
        await self._post(f"/api/v1/agent/tasks/{task_id}/result", report.model_dump(mode="json", exclude_none=True))


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
