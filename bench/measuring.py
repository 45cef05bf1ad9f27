"""What the side-by-side benches measure besides time: CPU per call of each process, timed sequential calls.

Standard library only: bench/celery_side.py imports it in the Celery venv (bench/celery), which has
nothing of Tiangong's. The samples are turned into `percentiles` by the caller (bench/versus_celery.py,
bench/roundtrip.py, bench/side_by_side.py).
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WARM_UP = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of the samples (ms, rounded to the microsecond), and how many there were."""
    qs = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50": round(qs[49], 3), "p95": round(qs[94], 3), "p99": round(qs[98], 3), "n": len(samples_ms)}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and of its live child processes (a prefork pool's children)."""
    total = 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2 :].split()
        total = (int(fields[11]) + int(fields[12])) / CLK_TCK
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(cpu_s(int(c)) for c in children)


def caller_cpu_s() -> float:
    """CPU seconds of this process (all its threads): the callers' own cost, next to the servers'."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sampled_calls(call: Callable[[], None], n: int, pids: dict[str, int], warm_up: int = WARM_UP) -> dict[str, Any]:
    """`call` `warm_up` times, then `n` times timed: each call's ms (`samples_ms`) and CPU ms per call of
    this process (`caller_cpu_ms_per_call`) and of each of `pids` (`<name>_cpu_ms_per_call`)."""
    for _ in range(warm_up):
        call()
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    caller_before = caller_cpu_s()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    out: dict[str, Any] = {"samples_ms": samples}
    out["caller_cpu_ms_per_call"] = round((caller_cpu_s() - caller_before) * 1000 / n, 3)
    for name, pid in pids.items():
        out[f"{name}_cpu_ms_per_call"] = round((cpu_s(pid) - before[name]) * 1000 / n, 3)
    return out


def sync_true_call(port: int, token: str, agent_id: str) -> Callable[[], None]:
    """A sync `execute true` for `agent_id` on a fresh HTTP connection, opened and closed per call as curl
    does; a task that does not succeed ends the bench (SystemExit)."""
    body = json.dumps({"agent_id": agent_id, "type": "execute", "params": {"cmd": "true"}, "sync": True, "timeout": 30})
    payload = body.encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", "/api/v1/tasks", payload, headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status != 201 or json.loads(data)["status"] != "success":
            raise SystemExit(f"tiangong task failed: {response.status} {data[:300]!r}")

    return call
