"""Celery's side of bench/versus_celery.py: a worker subprocess, and round trips and throughput through it.

Runs in the Celery venv (bench/celery, `make bench-celery-env`), never in Tiangong's process:

    bench/celery/.venv/bin/python -m bench.celery_side [--roundtrip-calls 200] [--throughput-tasks 2000]
        [--clients 64] [--concurrency 8] [--redis-db 13] [--serve-roundtrips]

and prints its raw figures as JSON on stdout (each round trip's samples, the throughput run's time and
failures, CPU per call of every process); bench/versus_celery.py turns them into the same percentiles
and throughput figures as Tiangong's. So it imports only the standard library, celery and redis.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measuring import WARM_UP, caller_cpu_s, cpu_s, sampled_calls  # noqa: E402


@contextmanager
def celery_worker(redis_url: str, pool: str, concurrency: int) -> Iterator[subprocess.Popen[bytes]]:
    """One Celery worker process (`pool`, `concurrency`) on `redis_url`, ready when this yields."""
    from bench.celery_app import execute_true

    cmd = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", f"--pool={pool}"]
    # Gossip, mingle and heartbeats are cluster chatter between workers; with one worker they only add noise.
    cmd += [f"--concurrency={concurrency}", "--loglevel=WARNING", "--without-gossip", "--without-mingle"]
    cmd += ["--without-heartbeat"]
    env = {**os.environ, "BENCH_CELERY_REDIS": redis_url, "PYTHONPATH": str(ROOT)}
    # Its output (a warning about running as root on this machine, every time) is shown only if it fails.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                execute_true.delay().get(timeout=120)  # answered once the worker consumes
            except Exception as exc:  # a timeout or a broker error: what the worker said tells which
                log.seek(0)
                said = log.read()[-3000:].decode(errors="replace")
                raise SystemExit(f"celery worker not ready: {exc!r}\n{said}") from exc
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: the pool's children go with it
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def celery_call() -> None:
    from bench.celery_app import execute_true

    result = execute_true.delay().get(timeout=60)
    if result["exit_code"] != 0:
        raise SystemExit(f"celery task failed: {result}")


def celery_throughput(n: int, clients: int) -> dict[str, Any]:
    """`clients` threads each doing `.delay().get()` until `n` tasks are done (Redis clients are per thread)."""
    from bench.celery_app import execute_true

    remaining, lock, failures = n, threading.Lock(), []

    def caller() -> None:
        nonlocal remaining
        while True:
            with lock:
                if remaining <= 0:
                    return
                remaining -= 1
            try:
                result = execute_true.delay().get(timeout=120)
            except Exception as exc:  # any failure is counted and reported, as for Tiangong's callers
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if result["exit_code"] != 0:
                failures.append(str(result)[:200])

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"tasks": n, "elapsed_s": elapsed, "failures": failures}


def measure_celery(args: argparse.Namespace) -> dict[str, Any]:
    """Round trip on the solo pool and on prefork with one child, then throughput on prefork."""
    import redis

    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    os.environ["BENCH_CELERY_REDIS"] = redis_url  # read by bench.celery_app when it is first imported
    server = redis.Redis.from_url(redis_url)
    server.flushdb()
    # Redis does part of Celery's work (the queue, the results), as the cloud does Tiangong's: its CPU counts.
    redis_pid = int(server.info("server")["process_id"])
    out: dict[str, Any] = {"redis": redis_url}
    for pool in ("solo", "prefork"):
        with celery_worker(redis_url, pool, 1) as worker:
            pids = {"worker": worker.pid, "redis": redis_pid}
            out[f"roundtrip_{pool}_1_ms"] = sampled_calls(celery_call, args.roundtrip_calls, pids)
    with celery_worker(redis_url, "prefork", args.concurrency) as worker:
        before = [cpu_s(worker.pid), cpu_s(redis_pid), caller_cpu_s()]
        run = celery_throughput(args.throughput_tasks, args.clients)
        after = [cpu_s(worker.pid), cpu_s(redis_pid), caller_cpu_s()]
        out["throughput"] = {"pool": "prefork", "concurrency": args.concurrency, "clients": args.clients, **run}
        for key, b, a in zip(("worker", "redis", "caller"), before, after, strict=True):
            out["throughput"][f"{key}_cpu_ms_per_task"] = round((a - b) * 1000 / args.throughput_tasks, 3)
    return out


def serve_roundtrips(args: argparse.Namespace) -> None:
    """For interleaved round trips: a solo worker, then for each line `N` read on stdin, N timed calls
    (after the usual warm-up once) answered as one line of sampled_calls' JSON; ends at end of input."""
    import redis

    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    os.environ["BENCH_CELERY_REDIS"] = redis_url
    server = redis.Redis.from_url(redis_url)
    server.flushdb()
    pids = {"redis": int(server.info("server")["process_id"])}
    with celery_worker(redis_url, "solo", 1) as worker:
        pids["worker"] = worker.pid
        for _ in range(WARM_UP):
            celery_call()
        print("ready", flush=True)
        for line in sys.stdin:
            print(json.dumps(sampled_calls(celery_call, int(line), pids, warm_up=0)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roundtrip-calls", type=int, default=200)
    ap.add_argument("--throughput-tasks", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--redis-db", type=int, default=13, help="the Redis database for Celery (flushed first)")
    ap.add_argument("--serve-roundtrips", action="store_true", help="timed blocks of calls on request (stdin)")
    args = ap.parse_args()
    if args.serve_roundtrips:
        serve_roundtrips(args)
        return
    print(json.dumps(measure_celery(args)))


if __name__ == "__main__":
    main()
