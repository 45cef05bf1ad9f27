"""Round-trip latency and throughput of the whole loop (cloud + agents + `execute true`); prints JSON.

    .venv/bin/python bench/roundtrip.py [--latency-tasks 500] [--throughput-tasks 2000]
        [--agents 4] [--concurrency 8] [--clients 64] [--setups sqlite,postgres-1,postgres-2]
        [--transport auto|websocket|http]

Latency: sequential sync tasks through one agent, measured at the caller, next to the floor of a
bare local `subprocess.run(["true"])`. Throughput: N agents x concurrency, fed by concurrent sync callers.

Setups: the embedded SQLite (one cloud), and the machine's PostgreSQL (a fresh database each) with one
and with two cloud replicas. With two, the latency caller talks to replica A and its agent to replica B
(every task crosses over LISTEN/NOTIFY both ways; the target is checked on this figure; the
same-replica one is printed beside it), and the throughput agents and callers are spread evenly over
both. The PostgreSQL targets (round-trip p50 <= 15 ms; >= 300 tasks/s with two replicas)
are reported as met or not; nothing is asserted. Beside each figure, the CPU milliseconds per task of
the cloud process(es) and of the agent process(es) (from /proc). `--transport` is the agents'
TIANGONG_AGENT_CHANNEL (default: theirs, `auto`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measuring import percentiles  # noqa: E402
from tests.e2e.harness import ADMIN  # noqa: E402
from tests.e2e.pgdb import PgDatabases  # noqa: E402
from tests.faults.harness import Cluster  # noqa: E402


def floor_ms(n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["true"], check=True)
        samples.append((time.perf_counter() - t0) * 1000)
    return percentiles(samples)


def cpu_ms_per_task(pids: dict[str, list[int]], before: dict[str, float], n: int) -> dict[str, float]:
    """CPU ms per task of each group of processes since `before` (from cpu_of)."""
    now = cpu_of(pids)
    return {f"{name}_cpu_ms_per_task": round((now[name] - before[name]) * 1000 / n, 3) for name in pids}


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds of each group of processes."""
    from bench.measuring import cpu_s

    return {name: sum(cpu_s(pid) for pid in group) for name, group in pids.items()}


def latency_ms(http: httpx.Client, agent_id: str, n: int, pids: dict[str, list[int]] | None = None) -> dict[str, float]:
    body = {"agent_id": agent_id, "type": "execute", "params": {"cmd": "true"}, "sync": True, "timeout": 30}
    for _ in range(20):  # warm up connections and caches
        http.post("/api/v1/tasks", json=body)
    pids = pids or {}
    before = cpu_of(pids)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = http.post("/api/v1/tasks", json=body)
        samples.append((time.perf_counter() - t0) * 1000)
        if r.json()["status"] != "success":
            raise SystemExit(f"task failed: {r.text}")
    return {**percentiles(samples), **cpu_ms_per_task(pids, before, n)}


async def throughput(urls: list[str], token: str, agent_id: str, n: int, clients: int) -> dict[str, object]:
    """`clients` concurrent callers, spread over `urls`, each creating sync tasks until `n` are done.

    The callers use aiohttp: with httpx's async pool at 64 connections the caller itself, not the
    system under test, was the bottleneck (measured: ~85 tasks/s, the cloud ~45 % busy).
    """
    body = {"agent_id": agent_id, "type": "execute", "params": {"cmd": "true"}, "sync": True, "timeout": 120}
    remaining = n
    failures: list[str] = []
    t0 = time.perf_counter()

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                async with http.post("/api/v1/tasks", json=body) as r:
                    task = await r.json()
            except aiohttp.ClientError as exc:
                failures.append(f"{time.perf_counter() - t0:.2f}s {type(exc).__name__}: {exc}")
                continue
            if r.status != 201 or task["status"] != "success":
                failures.append(f"{r.status}: {str(task)[:200]}")

    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=180)
    sessions = [
        aiohttp.ClientSession(url, headers=headers, connector=aiohttp.TCPConnector(limit=clients), timeout=timeout)
        for url in urls
    ]
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(sessions[k % len(sessions)]) for k in range(clients)))
        elapsed = time.perf_counter() - t0
    finally:
        for session in sessions:
            await session.close()
    return throughput_figures(n, elapsed, failures)


def throughput_figures(n: int, elapsed: float, failures: list[str]) -> dict[str, Any]:
    """How `n` tasks done in `elapsed` seconds read in every benchmark's JSON (the first failures shown)."""
    return {
        "tasks": n,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(n / elapsed, 1),
        "failures": len(failures),
        "first_failures": failures[:5],
    }


def _pids(cluster: Cluster, agents: list[Any]) -> dict[str, list[int]]:
    clouds = [r.proc.pid for r in cluster.replicas if r.proc is not None]
    return {"cloud": clouds, "agent": [a.proc.pid for a in agents if a.proc is not None]}


def measure(cluster: Cluster, args: argparse.Namespace) -> dict[str, object]:
    """Latency then throughput on a started cluster (one or more replicas on one database)."""
    replicas = cluster.replicas
    env = {"agent_channel": args.transport} if args.transport else {}
    # With two replicas the latency agent waits on B while the caller asks A: the cross-replica path.
    lat = cluster.agent("lat", via=replicas[-1].url, max_concurrency=1, **env)
    out: dict[str, object] = {"replicas": len(replicas), "transport": args.transport or "agent default"}
    pids = _pids(cluster, [lat])
    out["roundtrip_execute_true_ms"] = latency_ms(replicas[0].http, "lat", args.latency_tasks, pids)
    if len(replicas) > 1:  # for comparison: caller and agent on the same replica (no NOTIFY on the path)
        lat_a = cluster.agent("lat-a", via=replicas[0].url, max_concurrency=1, **env)
        pids = _pids(cluster, [lat_a])
        out["roundtrip_same_replica_ms"] = latency_ms(replicas[0].http, "lat-a", args.latency_tasks, pids)
    tput = [
        cluster.agent("tput", via=replicas[i % len(replicas)].url, max_concurrency=args.concurrency, **env)
        for i in range(args.agents)
    ]
    pids = _pids(cluster, tput)
    before = cpu_of(pids)
    figures = asyncio.run(throughput([r.url for r in replicas], ADMIN, "tput", args.throughput_tasks, args.clients))
    out["throughput"] = {
        "agents": args.agents,
        "concurrency": args.concurrency,
        "clients": args.clients,
        **figures,
        **cpu_ms_per_task(pids, before, args.throughput_tasks),
    }
    return out


@contextlib.contextmanager
def started_setup(name: str) -> Iterator[Cluster]:
    """`sqlite` (one cloud process), or `postgres-<replicas>` on a fresh database of the machine's
    PostgreSQL: the started cluster, closed (and its database dropped) afterwards."""
    backend, _, count = name.partition("-")
    if backend not in ("sqlite", "postgres"):
        raise SystemExit(f"--setups: unknown setup {name!r}; expected sqlite or postgres-<replicas>")
    dbs = PgDatabases() if backend == "postgres" else None
    try:
        with tempfile.TemporaryDirectory(prefix="tiangong-bench-") as tmp:
            url = dbs.create() if dbs is not None else None
            cluster = Cluster(Path(tmp), url, int(count or 1)).start()
            try:
                yield cluster
            finally:
                cluster.close()
    finally:
        if dbs is not None:
            dbs.drop_all()


def run_setup(name: str, args: argparse.Namespace) -> dict[str, object]:
    with started_setup(name) as cluster:
        return measure(cluster, args)


def targets(result: dict[str, Any]) -> dict[str, object]:
    """Issue 7's PostgreSQL targets, met or not (nothing is asserted)."""
    out: dict[str, object] = {}
    for name, figures in result.items():
        if not name.startswith("postgres-") or not isinstance(figures, dict):
            continue
        p50 = figures["roundtrip_execute_true_ms"]["p50"]
        out[f"{name}: roundtrip p50 {p50} ms <= 15 ms"] = p50 <= 15
        if figures["replicas"] >= 2:
            tps = figures["throughput"]["tasks_per_s"]
            out[f"{name}: throughput {tps} tasks/s >= 300"] = tps >= 300
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-tasks", type=int, default=500)
    ap.add_argument("--throughput-tasks", type=int, default=2000)
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--setups", default="sqlite,postgres-1,postgres-2")
    ap.add_argument("--transport", choices=["auto", "websocket", "http"], help="the agents' TIANGONG_AGENT_CHANNEL")
    args = ap.parse_args()

    result: dict[str, Any] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    result["floor_subprocess_true_ms"] = floor_ms(args.latency_tasks)
    floor = result["floor_subprocess_true_ms"]["p50"]
    for name in args.setups.split(","):
        figures = run_setup(name.strip(), args)
        rt = figures["roundtrip_execute_true_ms"]["p50"]  # type: ignore[index]
        figures["roundtrip_p50_over_floor_p50"] = round(rt / floor, 2)
        result[name.strip()] = figures
    result["targets_met"] = targets(result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
