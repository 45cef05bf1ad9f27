"""`ping` (seed 000): round-trip time to a host by ICMP echo, or by TCP connect where ICMP is not
possible (no raw socket, no unprivileged ICMP) or asked for."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from executors.base import BaseExecutor, Outcome, RunContext, Stopped, until_stopped
from wire.tasks import Assignment, TaskRequest, TaskStatus

MAX_COUNT = 100


def _target(req_command: str, params: dict[str, Any]) -> str:
    return str(params.get("host") or req_command).strip()


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise ValueError(f"params.count: must be a whole number from 1 to {MAX_COUNT}")
    return value


def _method(value: Any) -> str:
    if value not in ("icmp", "tcp"):
        raise ValueError('params.method: must be "icmp" or "tcp"')
    return str(value)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError("params.port: must be a port number from 1 to 65535")
    return value


class PingParams(BaseModel):
    """`params` of a ping task; `host` may come from `command` instead."""

    model_config = ConfigDict(extra="allow")

    host: Any = Field(None, description="The host to ping, when `command` does not name it.")
    count: Annotated[int, BeforeValidator(_count)] = Field(1, description="Echoes (or connects) to send.")
    method: Annotated[str, BeforeValidator(_method)] = Field("icmp", description="icmp or tcp.")
    port: Annotated[int, BeforeValidator(_port)] = Field(80, description="Port for tcp.")


class PingExecutor(BaseExecutor):
    """`command` or `params.host`; `params.count` (default 1); `params.method` icmp (default) or tcp;
    `params.port` for tcp (default 80)."""

    type: ClassVar[str] = "ping"
    default_exec_timeout: ClassVar[int] = 10
    params_model = PingParams

    def check(self, req: TaskRequest, params: PingParams) -> None:
        """A host is required, from `params.host` or `command`."""
        host = _target(req.command, req.params)
        if not host or any(c.isspace() for c in host):
            raise ValueError("command: the host to ping is required (or params.host)")

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        """Measure, unless the task is canceled or its time runs out first."""
        try:
            return await until_stopped(ctx, self._measure(task, ctx))
        except Stopped as stop:
            error = "canceled" if stop.reason == "canceled" else f"execution timed out after {task.exec_timeout} s"
            return Outcome(stop.status, error=error)

    async def _measure(self, task: Assignment, ctx: RunContext) -> Outcome:
        host = _target(task.command, task.params)
        count = int(task.params.get("count", 1))
        per_try = max(0.2, min(2.0, (ctx.deadline - asyncio.get_running_loop().time()) / count))
        how = "icmp"
        if task.params.get("method", "icmp") == "icmp":
            try:
                rtts, note = await _icmp(host, count, per_try), ""
            except PermissionError as exc:  # no raw socket and no unprivileged ICMP on this machine
                how, note = "tcp", f"ICMP not permitted here ({exc}); measured a TCP connect instead"
                ctx.log(note)
            except OSError as exc:
                return Outcome(TaskStatus.failed, error=f"ping {host}: {exc}")
        else:
            how, note = "tcp", ""
        if how == "tcp":
            port = int(task.params.get("port", 80))
            rtts = [r for r in [await _tcp(host, port, per_try) for _ in range(count)] if r is not None]
        return _outcome(host, how, count, rtts, note)


async def _icmp(host: str, count: int, timeout: float) -> list[float]:
    import icmplib
    from icmplib.exceptions import ICMPLibError, SocketPermissionError

    try:
        reply = await icmplib.async_ping(host, count=count, interval=0.2, timeout=timeout, privileged=os.geteuid() == 0)
    except SocketPermissionError as exc:
        raise PermissionError(str(exc)) from exc
    except ICMPLibError as exc:  # unknown name and the like
        raise OSError(str(exc)) from exc
    return list(reply.rtts)


async def _tcp(host: str, port: int, timeout: float) -> float | None:
    start = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return None
    elapsed = (time.perf_counter() - start) * 1000
    writer.close()
    return elapsed


def _outcome(host: str, how: str, sent: int, rtts: list[float], note: str) -> Outcome:
    received = len(rtts)
    data: dict[str, Any] = {"host": host, "method": how, "sent": sent, "received": received}
    if not rtts:
        return Outcome(
            TaskStatus.failed,
            data=data,
            error=f"{host} is unreachable ({how}: {sent} sent, 0 received)",
            result=f"PING {host} ({how}): {sent} sent, 0 received, 100% loss\n",
        )
    avg = sum(rtts) / received
    data.update(rtt_ms=round(avg, 3), rtt_min_ms=round(min(rtts), 3), rtt_max_ms=round(max(rtts), 3))
    loss = 100 * (sent - received) / sent
    result = (
        f"PING {host} ({how}): {sent} sent, {received} received, {loss:.0f}% loss, "
        f"rtt min/avg/max = {min(rtts):.3f}/{avg:.3f}/{max(rtts):.3f} ms\n" + (f"{note}\n" if note else "")
    )
    return Outcome(TaskStatus.success, result=result, data=data)
