"""Tiangong and Celery 5 + Redis side by side on the same workloads, in one run; prints JSON (issue 18).

    .venv/bin/python bench/versus_celery.py [--roundtrip-calls 200] [--throughput-tasks 2000] [--clients 64]
        [--concurrency 8] [--agents 2] [--redis-db 13] [--setups sqlite,postgres-2] [--profile FILE]

Celery's side runs in a venv of its own, `bench/celery/.venv` (`make bench-celery-env`; Celery is not in
our lock: see docs/performance.md), as subprocesses: bench/celery_side.py (the callers) and its worker;
nothing of Celery's is imported here. Redis on 127.0.0.1:6379 (the database `--redis-db` is flushed
first). The task is `execute` of `true` in Tiangong and, in Celery, a task running
`subprocess.run(["true"])` with its output captured (bench/celery_app.py).

- Round trip, interleaved (the target's figure): Celery's and Tiangong's round trips in alternating blocks
  of 10 calls, `--roundtrip-calls` of each, so both see the same machine (a VM's speed drifts within
  minutes). Then, as before, each side's calls on their own:
- Round trip: `--roundtrip-calls` sequential sync calls after 20 warm-up calls, p50 and p95 at the
  caller. Tiangong: `POST /api/v1/tasks` with `sync: true` on a fresh HTTP connection per call (as curl
  does), one agent of concurrency 1. Celery: `execute_true.delay().get()` (the client keeps its Redis
  connections, as Celery clients do). The ratio is taken against Celery's solo pool: like Tiangong's
  agent, its one worker process both fetches the task and starts the command, with no hop to a pool
  child; prefork with one child is printed beside it. CPU per call of the cloud, agent and worker
  processes is printed too: it shows where the round trip's time is spent.
- Throughput: `--clients` concurrent sync callers until `--throughput-tasks` are done. Celery: one
  prefork worker of `--concurrency` children, callers are threads doing `.delay().get()`. Tiangong:
  `--agents` agent processes sharing `--concurrency` task slots, callers on aiohttp (bench/roundtrip.py),
  one cloud process on SQLite; and on PostgreSQL two replicas on one database, agents and callers spread
  over both.
Targets (issue 18) are printed as met or not met; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measuring import caller_cpu_s, cpu_s, percentiles, sampled_calls, sync_true_call  # noqa: E402
from bench.profile_summary import record_profile  # noqa: E402
from bench.roundtrip import started_setup, throughput, throughput_figures  # noqa: E402
from tests.e2e.harness import ADMIN  # noqa: E402
from tests.faults.harness import Cluster  # noqa: E402

# Built by `make bench-celery-env` from bench/celery's own lock: Celery pins python-dateutil<3, which
# resolved with our dependencies would move python-dateutil and kubernetes down, for a bench.
CELERY_PYTHON = ROOT / "bench" / "celery" / ".venv" / "bin" / "python"


def call_figures(sampled: dict[str, Any]) -> dict[str, Any]:
    """bench.measuring.sampled_calls' output with its samples as percentiles (the CPU figures kept)."""
    rest = {key: value for key, value in sampled.items() if key != "samples_ms"}
    return {**percentiles(sampled["samples_ms"]), **rest}


# ---------------------------------------------------------------- Celery (in its own venv)


def celery_python(path: Path = CELERY_PYTHON) -> Path:
    """The Celery venv's python, or an exit that says how to build it."""
    if not path.exists():
        raise SystemExit(f"no Celery venv: {path} is missing; run `make bench-celery-env` (bench/celery's own lock)")
    return path


def celery_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """bench/celery_side.py's raw JSON as figures: round trips as percentiles, throughput as Tiangong's is."""
    out: dict[str, Any] = {"redis": raw["redis"]}
    for pool in ("solo", "prefork"):
        out[f"roundtrip_{pool}_1_ms"] = call_figures(raw[f"roundtrip_{pool}_1_ms"])
    run = raw["throughput"]
    cpu = {key: value for key, value in run.items() if key.endswith("_cpu_ms_per_task")}
    figures = throughput_figures(run["tasks"], run["elapsed_s"], run["failures"])
    out["throughput"] = {"pool": run["pool"], "concurrency": run["concurrency"], "clients": run["clients"]}
    out["throughput"].update(figures, **cpu)
    return out


def measure_celery(args: argparse.Namespace, python: Path) -> dict[str, Any]:
    """Celery's round trips and throughput, measured by bench/celery_side.py run with the Celery venv's python."""
    cmd = [str(python), "-m", "bench.celery_side", "--roundtrip-calls", str(args.roundtrip_calls)]
    cmd += ["--throughput-tasks", str(args.throughput_tasks), "--clients", str(args.clients)]
    cmd += ["--concurrency", str(args.concurrency), "--redis-db", str(args.redis_db)]
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=False)  # its errors go to our stderr
    if done.returncode != 0:
        raise SystemExit(f"the Celery side failed (exit {done.returncode}; its error is above): {' '.join(cmd)}")
    return celery_figures(json.loads(done.stdout))


# ---------------------------------------------------------------- Tiangong


INTERLEAVED_BLOCK = 10
"""Calls per block when Celery's and Tiangong's round trips alternate."""


def interleaved_roundtrips(python: Path, args: argparse.Namespace, call: Callable[[], None]) -> dict[str, Any]:
    """Celery's and Tiangong's round trips in alternating blocks of INTERLEAVED_BLOCK calls (Celery's from
    bench/celery_side.py --serve-roundtrips, its solo worker), so that both see the same machine: this VM's
    speed drifts within minutes, more than between two runs measured one after the other."""
    cmd = [str(python), "-m", "bench.celery_side", "--serve-roundtrips", "--redis-db", str(args.redis_db)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    celery_ms: list[float] = []
    tiangong_ms: list[float] = []
    try:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the Celery side did not start (its error is above): {' '.join(cmd)}")
        for _ in range(max(1, args.roundtrip_calls // INTERLEAVED_BLOCK)):
            proc.stdin.write(f"{INTERLEAVED_BLOCK}\n")
            proc.stdin.flush()
            celery_ms += json.loads(proc.stdout.readline())["samples_ms"]
            tiangong_ms += sampled_calls(call, INTERLEAVED_BLOCK, {}, warm_up=0)["samples_ms"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    celery, tiangong = percentiles(celery_ms), percentiles(tiangong_ms)
    ratio = round(tiangong["p50"] / celery["p50"], 2)
    return {"block": INTERLEAVED_BLOCK, "celery_ms": celery, "tiangong_ms": tiangong, "ratio_p50": ratio}


def measure_tiangong(cluster: Cluster, args: argparse.Namespace, profile: Path | None) -> dict[str, Any]:
    """Round trip (caller on the first replica, agent on the last), then throughput over all replicas."""
    replicas = cluster.replicas
    agent = cluster.agent("rt", via=replicas[-1].url, max_concurrency=1)
    assert replicas[0].proc is not None and agent.proc is not None
    pids = {"cloud": replicas[0].proc.pid, "agent": agent.proc.pid}
    call = sync_true_call(replicas[0].port, ADMIN, "rt")
    out: dict[str, Any] = {"replicas": len(replicas)}
    out["roundtrip_ms"] = call_figures(sampled_calls(call, args.roundtrip_calls, pids))
    if len(replicas) == 1 and getattr(args, "celery_python", None) is not None:
        out["interleaved_roundtrip"] = interleaved_roundtrips(args.celery_python, args, call)
    if profile is not None:  # after the measured calls: the sampling does not touch the figures above
        out["profile"] = record_profile(
            replicas[0].proc.pid, profile, lambda: [call() for _ in range(1000)], native=args.profile_native
        )
    per_agent = max(1, args.concurrency // args.agents)
    tput = [
        cluster.agent("tput", via=replicas[i % len(replicas)].url, max_concurrency=per_agent)
        for i in range(args.agents)
    ]
    cpu_pids = [r.proc.pid for r in replicas if r.proc is not None]
    agent_pids = [a.proc.pid for a in tput if a.proc is not None]
    before = [sum(cpu_s(p) for p in pids) for pids in (cpu_pids, agent_pids)] + [caller_cpu_s()]
    figures = asyncio.run(throughput([r.url for r in replicas], ADMIN, "tput", args.throughput_tasks, args.clients))
    n = args.throughput_tasks
    after = [sum(cpu_s(p) for p in pids) for pids in (cpu_pids, agent_pids)] + [caller_cpu_s()]
    for key, b, a in zip(("cloud", "agents", "caller"), before, after, strict=True):
        figures[f"{key}_cpu_ms_per_task"] = round((a - b) * 1000 / n, 3)
    out["throughput"] = {"agents": len(tput), "concurrency": per_agent * len(tput), "clients": args.clients, **figures}
    return out


def run_tiangong(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One setup of bench/roundtrip.py's (`sqlite`, `postgres-<replicas>`); only SQLite's cloud is profiled."""
    profile = args.profile if name.startswith("sqlite") else None
    with started_setup(name) as cluster:
        return measure_tiangong(cluster, args, profile)


# ---------------------------------------------------------------- ratios and targets


def compare(result: dict[str, Any]) -> dict[str, Any]:
    """Tiangong/Celery ratios and issue 18's targets, each "met" or "not met"."""
    celery = result["celery"]
    c_p50, c_tps = celery["roundtrip_solo_1_ms"]["p50"], celery["throughput"]["tasks_per_s"]
    ratios: dict[str, Any] = {}
    targets: dict[str, str] = {}

    def target(text: str, ok: bool) -> None:
        targets[text] = "met" if ok else "not met"

    for name, figures in result["tiangong"].items():
        rt, tps = figures["roundtrip_ms"], figures["throughput"]["tasks_per_s"]
        ratios[name] = {
            "roundtrip_p50": round(rt["p50"] / c_p50, 2),
            "roundtrip_p95": round(rt["p95"] / celery["roundtrip_solo_1_ms"]["p95"], 2),
            "throughput": round(tps / c_tps, 2),
        }
        r = ratios[name]
        if name == "sqlite":
            mixed = figures.get("interleaved_roundtrip")
            if mixed is not None:  # both measured in alternating blocks: the machine's drift cancels out
                r["roundtrip_p50_interleaved"] = mixed["ratio_p50"]
                t_p50, m_p50 = mixed["tiangong_ms"]["p50"], mixed["celery_ms"]["p50"]
                target(
                    f"sqlite: round trip p50, interleaved with Celery's, {t_p50} ms / {m_p50} ms = "
                    f"{mixed['ratio_p50']} <= 1.0",
                    mixed["ratio_p50"] <= 1.0,
                )
            else:
                target(
                    f"sqlite: round trip p50 {rt['p50']} ms / Celery {c_p50} ms = {r['roundtrip_p50']} <= 1.0",
                    r["roundtrip_p50"] <= 1.0,
                )
            target(
                f"sqlite: throughput {tps} / Celery {c_tps} tasks/s = {r['throughput']} >= 2.5", r["throughput"] >= 2.5
            )
            target(f"sqlite: throughput {tps} tasks/s >= 1000", tps >= 1000)
        elif figures["replicas"] >= 2:
            target(
                f"{name}: throughput {tps} / Celery {c_tps} tasks/s = {r['throughput']} >= 1.5", r["throughput"] >= 1.5
            )
    return {"tiangong_over_celery": ratios, "targets": targets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roundtrip-calls", type=int, default=200)
    ap.add_argument("--throughput-tasks", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8, help="Celery's worker concurrency = Tiangong's total slots")
    ap.add_argument("--agents", type=int, default=2, help="Tiangong agent processes sharing --concurrency slots")
    ap.add_argument("--redis-db", type=int, default=13, help="the Redis database for Celery (flushed first)")
    ap.add_argument("--setups", default="sqlite,postgres-2")
    ap.add_argument("--profile", type=Path, help="py-spy the SQLite cloud over 1,000 more round trips into FILE")
    ap.add_argument("--profile-native", action="store_true", help="with C frames (py-spy stops the process per sample)")
    args = ap.parse_args()
    python = celery_python()  # before the long runs: a missing venv is told at once
    args.celery_python = python

    result: dict[str, Any] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    result["celery"] = measure_celery(args, python)
    result["tiangong"] = {name.strip(): run_tiangong(name.strip(), args) for name in args.setups.split(",")}
    result.update(compare(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
