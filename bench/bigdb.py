"""Latency of create, claim, list and get with a million finished tasks in the database, against a nearly
empty one, through a real cloud and the HTTP API; prints JSON (issue 18, target 3).

    .venv/bin/python bench/bigdb.py [--tasks 1000000] [--small-tasks 10000] [--calls 200]
        [--setups sqlite,postgres] [--keep DIR]

For each setup two clouds run side by side, on databases filled alike by bench/bigdb_fill.py (finished
tasks over 100 agents and 90 days, log lines for a tenth of them): `small` with `--small-tasks` and
`full` with `--tasks`. The small one is the baseline: it has enough tasks to fill every page the bench
asks for, so both sides answer the same pages and the ratio shows what the million rows cost, not the
cost of presenting ten tasks rather than none (`--small-tasks 0` is a truly empty database). Each
operation is timed on both in alternating blocks of calls, so a burst of load on this shared machine
falls on both. The calls are sequential, on one kept-alive connection per cloud:

- create: `POST /api/v1/tasks` (shell, async) for fleet-000, an agent with ~1 % of the old tasks;
  claim: that agent's `POST /claim` (capacity 1, no wait) taking it; its result is then reported
  (`result`). claim_empty: a claim finding nothing (what every idle agent's claim does).
- get: `GET /api/v1/tasks/{id}` of a random task.
- list_*: `GET /api/v1/tasks` unfiltered, by agent, status, type, a one-day time range, all three
  filters, a deep page by offset (`page=500&page_size=100`) and the same depth by cursor (`after`).
- metrics_scrape: `GET /metrics` (10 calls), which counts the tasks by status and type.

Printed: p50/p95 per operation and database, the ratio full/small, and the target (p50 within 20 %)
met or not for each; nothing is asserted. `--keep DIR` keeps the filled SQLite files in DIR and the
PostgreSQL databases `tg_bigdb_<tasks>` for the next run (a fill takes about a minute per million here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bigdb_fill import fill  # noqa: E402
from bench.measuring import percentiles  # noqa: E402
from tests.e2e.harness import REGISTER, AgentClient  # noqa: E402
from tests.e2e.pgdb import ADMIN_DSN  # noqa: E402
from tests.faults.harness import Cluster  # noqa: E402

AGENT_ID = "fleet-000"
TARGET = 1.2
BLOCK = 25
"""Calls per block; blocks alternate between the two clouds."""


class Side:
    """One cloud and what the bench needs of it: an admin client, the agent's client, known task ids."""

    def __init__(self, cluster: Cluster, id_range: int) -> None:
        self.cluster = cluster
        self.http = cluster.a.http
        self.agent = AgentClient(cluster.a.url)
        r = self.agent.post(REGISTER, json={"agent_id": AGENT_ID, "executors": ["shell"]})
        r.raise_for_status()
        self.id_range = id_range
        self.created: list[int] = []
        self.pending: list[int] = []
        self.claimed: list[dict[str, Any]] = []
        self.rng = random.Random(5)

    def create(self) -> None:
        r = self.http.post("/api/v1/tasks", json={"agent_id": AGENT_ID, "type": "shell", "command": "true"})
        _ok(r, 201)
        n = int(r.json()["id"].removeprefix("task-"))
        self.created.append(n)
        self.pending.append(n)

    def claim(self) -> None:
        r = self.agent.post(f"/api/v1/agents/{AGENT_ID}/claim", json={"capacity": 1, "wait_s": 0})
        _ok(r, 200)
        got = r.json()
        if len(got) != 1:
            raise SystemExit(f"claim: expected the task just created, got {len(got)}")
        self.claimed.extend(got)

    def result(self) -> None:
        task = self.claimed.pop()
        body = {"task_token": task["task_token"], "status": "success", "exit_code": 0, "log_lines": 0}
        _ok(self.agent.post(f"/api/v1/agent/tasks/{task['id']}/result", json=body), 200)

    def claim_empty(self) -> None:
        r = self.agent.post(f"/api/v1/agents/{AGENT_ID}/claim", json={"capacity": 1, "wait_s": 0})
        _ok(r, 200)

    def get(self) -> None:
        pool = self.id_range or len(self.created)
        n = self.rng.randrange(1, pool + 1) if self.id_range else self.created[self.rng.randrange(pool)]
        _ok(self.http.get(f"/api/v1/tasks/task-{n}"), 200)

    def metrics(self) -> None:
        _ok(self.http.get("/metrics"), 200)

    def lister(self, params: dict[str, Any]) -> Callable[[], None]:
        def call() -> None:
            _ok(self.http.get("/api/v1/tasks", params=params), 200)

        return call


def _ok(r: httpx.Response, status: int) -> None:
    if r.status_code != status:
        raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}")


def list_queries(n_tasks: int) -> dict[str, dict[str, Any]]:
    now = datetime.now(UTC)
    day = {"since": (now - timedelta(days=45)).isoformat(), "until": (now - timedelta(days=44)).isoformat()}
    return {
        "list_default": {},
        "list_agent": {"agent_id": "fleet-007"},
        "list_status": {"status": "failed"},
        "list_type": {"type": "python"},
        "list_time_range": day,
        "list_agent_status_type": {"agent_id": "fleet-007", "status": "success", "type": "shell"},
        "list_deep_offset": {"page": 500, "page_size": 100},
        "list_deep_cursor": {"after": f"task-{max(n_tasks // 2, 1)}", "page_size": 100},
    }


def timed_alternating(calls: dict[str, Callable[[], None]], n: int) -> dict[str, list[float]]:
    """Each side's call `n` times (after a few unmeasured ones), in blocks alternating between sides."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(5):
            call()
    while any(len(s) < n for s in samples.values()):
        for name, call in calls.items():
            for _ in range(min(BLOCK, n - len(samples[name]))):
                t0 = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - t0) * 1000)
    return samples


def timed_cycle(sides: dict[str, Side], n: int) -> dict[str, dict[str, list[float]]]:
    """create -> claim -> result on each side, each step timed, in alternating blocks."""
    out: dict[str, dict[str, list[float]]] = {name: {"create": [], "claim": [], "result": []} for name in sides}
    for side in sides.values():  # warm up
        for _ in range(5):
            side.create()
            side.claim()
            side.result()
    while any(len(o["create"]) < n for o in out.values()):
        for name, side in sides.items():
            for _ in range(min(BLOCK, n - len(out[name]["create"]))):
                for step in ("create", "claim", "result"):
                    t0 = time.perf_counter()
                    getattr(side, step)()
                    out[name][step].append((time.perf_counter() - t0) * 1000)
    return out


def measure(sides: dict[str, Side], n: int, n_tasks: int) -> dict[str, Any]:
    """Every operation on both sides: figures and full/small ratios."""
    figures: dict[str, dict[str, Any]] = {name: {} for name in sides}
    for name, steps in timed_cycle(sides, n).items():
        for step, samples in steps.items():
            figures[name][step] = percentiles(samples)
    single = {"claim_empty": "claim_empty", "get": "get"}
    for op, attr in single.items():
        got = timed_alternating({name: getattr(s, attr) for name, s in sides.items()}, n)
        for name, samples in got.items():
            figures[name][op] = percentiles(samples)
    for op in list_queries(n_tasks):
        # Each side's own queries: the cursor in the middle of its own tasks.
        got = timed_alternating(
            {name: s.lister(list_queries(s.id_range or n_tasks)[op]) for name, s in sides.items()}, n
        )
        for name, samples in got.items():
            figures[name][op] = percentiles(samples)
    # A Prometheus scrape counts tasks by status and type: a few, as a scraper calls it every 15 s or so.
    got = timed_alternating({name: s.metrics for name, s in sides.items()}, min(n, 10))
    for name, samples in got.items():
        figures[name]["metrics_scrape"] = percentiles(samples)
    return {**figures, "full_over_small": ratios(figures["small"], figures["full"])}


def ratios(small: dict[str, Any], full: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per operation: full/small at p50 and p95, and whether p50 is within the target."""
    out = {}
    for op, e in small.items():
        f = full[op]
        p50, p95 = f["p50"] / e["p50"], f["p95"] / e["p95"]
        out[op] = {"p50": round(p50, 2), "p95": round(p95, 2), "target": "met" if p50 <= TARGET else "not met"}
    return out


@contextlib.contextmanager
def sqlite_pair(sizes: tuple[int, int], keep: Path | None) -> Iterator[tuple[list[Cluster], dict[int, Any]]]:
    """Clouds on SQLite files of `sizes` tasks each (kept in `keep` when given, and filled only once)."""
    with tempfile.TemporaryDirectory(prefix="tiangong-bigdb-") as tmp:
        roots, filled = [], {}
        for n in sizes:
            root = (keep or Path(tmp)) / f"sqlite-{n}"
            db_file = root / "cloud" / "tiangong.db"
            filled[n] = {"reused": str(db_file)}
            if not db_file.exists():
                db_file.parent.mkdir(parents=True, exist_ok=True)
                filled[n] = fill(f"sqlite:///{db_file}", n)
            roots.append((root, None))
        with _clusters(*roots) as clusters:
            yield clusters, filled


@contextlib.contextmanager
def postgres_pair(sizes: tuple[int, int], keep: Path | None) -> Iterator[tuple[list[Cluster], dict[int, Any]]]:
    """Clouds on PostgreSQL databases `tg_bigdb_<tasks>` (kept when `keep` is given, and filled only once)."""
    import psycopg

    names = [f"tg_bigdb_{n}" for n in sizes]
    filled: dict[int, Any] = {}
    try:
        with psycopg.connect(**ADMIN_DSN, autocommit=True) as admin:  # type: ignore[arg-type]
            for n, name in zip(sizes, names, strict=True):
                filled[n] = {"reused": name}
                exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                if exists and keep:
                    continue
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{name}"')
                filled[n] = fill(_pg_url(name), n)
        tmp = tempfile.TemporaryDirectory(prefix="tiangong-bigdb-")
        with tmp, _clusters(*((Path(tmp.name) / name, _pg_url(name)) for name in names)) as clusters:
            yield clusters, filled
    finally:
        if not keep:
            with psycopg.connect(**ADMIN_DSN, autocommit=True) as admin:  # type: ignore[arg-type]
                for name in names:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@contextlib.contextmanager
def _clusters(*specs: tuple[Path, str | None]) -> Iterator[list[Cluster]]:
    clusters = [Cluster(root, url) for root, url in specs]
    try:
        for c in clusters:
            c.start()
        yield clusters
    finally:
        for c in clusters:
            c.close()


def run_setup(name: str, args: argparse.Namespace) -> dict[str, Any]:
    pair = {"sqlite": sqlite_pair, "postgres": postgres_pair}.get(name)
    if pair is None:
        raise SystemExit(f"--setups: unknown setup {name!r}; expected sqlite or postgres")
    with pair((args.small_tasks, args.tasks), args.keep) as ([small, full], filled):
        sides = {"small": Side(small, args.small_tasks), "full": Side(full, args.tasks)}
        return {"fill": filled, **measure(sides, args.calls, args.tasks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--small-tasks", type=int, default=10_000, help="the baseline database's tasks (0: empty)")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--setups", default="sqlite,postgres")
    ap.add_argument("--keep", type=Path, default=None, help="keep the filled databases for the next run")
    args = ap.parse_args()
    result: dict[str, Any] = {"cores": os.cpu_count(), "tasks": args.tasks, "calls": args.calls}
    for name in args.setups.split(","):
        result[name.strip()] = run_setup(name.strip(), args)
    result["targets"] = {
        f"{setup}: {op} p50 full/small {r['p50']} <= {TARGET}": r["target"]
        for setup in args.setups.split(",")
        for op, r in result[setup.strip()]["full_over_small"].items()
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
