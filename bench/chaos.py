"""Chaos run: shell tasks across agents and cloud replicas on PostgreSQL (or one cloud on SQLite) while
agents and replicas are SIGKILLed and restarted at random; checks that nothing is lost or run twice, and
prints JSON figures.

    .venv/bin/python bench/chaos.py [--tasks 10000] [--agents 4] [--replicas 2] [--seed 1] [--sqlite]

Agents and callers reach the replicas through a load-balancing proxy (tests/faults/proxy.py), as they
would in production; tasks are created at a steady rate, each with a request_id (a caller whose
request died with a replica sends it again) and with retries, so an attempt whose agent was killed runs
again. Every task appends `<task id> <attempt> start <pid>` to a marker file first and
`<task id> <attempt> end <pid>` last (the attempt from TIANGONG_TASK_ATTEMPT), and prints three lines
naming itself.

Definitions used by the figures:
- ran twice: some (task, attempt) started twice, or finished twice; or a task started more often than
  the cloud handed out attempts (`attempts`), or ran an attempt the cloud never handed out. With no
  retry recorded this means any second run.
- lost: a task that never reached a final status, or ended `success` without its final attempt's three
  lines (in order, once) or without the matching result.
- failed_agent_lost: tasks that legitimately ended `failed` with `agent lost` after using every retry.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import ADMIN  # noqa: E402
from tests.faults.harness import AgentProcess, Cluster, Replica  # noqa: E402
from wire.tasks import is_lost  # noqa: E402

POOLS = 2
"""Agent ids; the agent processes are spread over them, so each id is served by a pool."""
CLOUD_SETTINGS: dict[str, Any] = {
    "lease_seconds": 5,
    "heartbeat_seconds": 1,
    "reaper_interval_seconds": 0.5,
    "agent_offline_seconds": 300,  # a pool whose processes are all down still accepts tasks
    "recheck_seconds": 2,
}
MAX_RETRIES = 6
RETRY_BACKOFF = 0.1


class Chaos:
    """One run: the cluster, a steady stream of tasks, and a monkey killing processes."""

    def __init__(self, cluster: Cluster, tasks: int, rng: random.Random, say: Callable[[str], None]) -> None:
        self.cluster, self.n, self.rng, self.say = cluster, tasks, rng, say
        self.marker = cluster.root / "marker"
        self.created: dict[int, str] = {}  # request number -> task id
        self.kills: Counter[str] = Counter()
        self.caller_retries = 0
        self.creating = threading.Event()
        self.stop_monkey = threading.Event()
        self.down: list[tuple[Replica | AgentProcess, float]] = []  # killed processes, when each restarts
        self.lock = threading.Lock()

    def command(self, i: int) -> str:
        """Cheap: one spawn of sh; one task in eight sleeps a little, so kills also land mid-run."""
        me, run = "$TIANGONG_TASK_ID", "$TIANGONG_TASK_ID $TIANGONG_TASK_ATTEMPT"
        pause = "sleep 0.3; " if i % 8 == 0 else ""
        return (
            f'echo "{run} start $$" >> {self.marker}; echo "one {me}"; echo "two {me}"; {pause}'
            f'echo "three {me}"; echo "{run} end $$" >> {self.marker}'
        )

    def create_all(self, url: str, rate: float, threads: int = 4) -> None:
        """Create the tasks at about `rate` per second from `threads` callers."""
        t0 = time.monotonic()

        def caller(k: int) -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as http:
                for i in range(k, self.n, threads):
                    delay = t0 + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # pacing the stream of tasks, not waiting on a condition
                    self.created[i] = self._create(http, i)

        workers = [threading.Thread(target=caller, args=(k,), name=f"caller-{k}") for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _create(self, http: httpx.Client, i: int) -> str:
        body = {
            "agent_id": f"chaos-{i % POOLS}",
            "type": "shell",
            "command": self.command(i),
            "request_id": f"chaos-{i}",
            "max_retries": MAX_RETRIES,
            "retry_backoff": RETRY_BACKOFF,
            "exec_timeout": 120,
        }
        for _ in range(600):
            try:
                r = http.post("/api/v1/tasks", json=body)
                if r.status_code in (200, 201):
                    return str(r.json()["id"])
                if r.status_code < 500:
                    raise RuntimeError(f"task {i} refused: {r.status_code} {r.text}")
            except httpx.TransportError:
                pass  # the replica died under the request: send the same request_id again
            with self.lock:
                self.caller_retries += 1
            time.sleep(0.1)
        raise RuntimeError(f"task {i} could not be created")

    def monkey(self, every: tuple[float, float], down_for: tuple[float, float]) -> None:
        """Until told to stop: now and then SIGKILL a random live process; restart it a little later.
        A replica is killed only while another one is serving (a relaunched replica may take seconds
        to start on a loaded machine), so callers always have a cloud to talk to."""
        while not self.stop_monkey.wait(self.rng.uniform(*every)):
            self._restart_due(time.monotonic())
            down = {id(proc) for proc, _ in self.down}  # by identity: a Replica is an unhashable dataclass
            live_replicas = [r for r in self.cluster.replicas if id(r) not in down]
            targets: list[Replica | AgentProcess] = [a for a in self.cluster.agents if id(a) not in down]
            serving = [r for r in live_replicas if r.serving]
            if len(self.cluster.replicas) == 1:  # SQLite: one cloud, killed and restarted like any replica
                targets += [r for r in live_replicas if r.serving]
            else:
                targets += [r for r in live_replicas if any(s is not r for s in serving)]
            if not targets:
                continue
            # Each kind is killed once before the choice is left to chance, so even a short run kills both.
            unhit = [t for t in targets if self.kills[_kind(t)] == 0]
            victim = self.rng.choice(unhit or targets)
            victim.kill()
            self.kills[_kind(victim)] += 1
            self.down.append((victim, time.monotonic() + self.rng.uniform(*down_for)))
        self._restart_due(float("inf"))

    def _restart_due(self, now: float) -> None:
        due = [(proc, at) for proc, at in self.down if at <= now]
        self.down = [(proc, at) for proc, at in self.down if at > now]
        for proc, _ in due:
            if isinstance(proc, Replica):
                proc.launch()  # not waited for: the proxy sends nobody there until it listens
            else:
                proc.start()


def _kind(proc: Replica | AgentProcess) -> str:
    return "replica" if isinstance(proc, Replica) else "agent"


def _wait_final(database_url: str, n: int, timeout: float, say: Callable[[str], None]) -> None:
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    last = 0.0
    try:
        while True:
            with engine.connect() as conn:
                total = conn.execute(text("SELECT count(*) FROM tasks")).scalar_one()
                left = conn.execute(
                    text("SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')")
                ).scalar_one()
            if total >= n and left == 0:
                return
            if time.monotonic() - last > 10:
                say(f"chaos: {total} tasks created, {left} not final yet")
                last = time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} tasks still not final after {timeout:.0f} s")
            time.sleep(0.5)
    finally:
        engine.dispose()


def runs(marker: Path, event: str) -> dict[str, Counter[int]]:
    """Task id -> how many times each of its attempts wrote `event` to the marker file."""
    out: dict[str, Counter[int]] = {}
    if marker.exists():
        for line in marker.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[2] == event:
                out.setdefault(parts[0], Counter())[int(parts[1])] += 1
    return out


def run_problems(started: Counter[int], finished: Counter[int], attempts: int, retries: int) -> str | None:
    """What is wrong with one task's runs, if anything (see `ran twice` in the module doc)."""
    twice = sorted(a for a, k in (started + finished).items() if started[a] > 1 or finished[a] > 1)
    if twice:
        return f"attempts {twice} ran twice (started {dict(started)}, finished {dict(finished)})"
    ran = sum(started.values())
    unknown = sorted(a for a in started | finished if not 1 <= a <= attempts)
    if ran > attempts or unknown or (retries == 0 and ran > 1):
        return f"started {dict(started)}, finished {dict(finished)}, attempts {attempts}"
    return None


def verify(database_url: str, marker: Path, task_ids: set[str]) -> dict[str, Any]:
    """Read back every task, log line and marker entry; count what went wrong (see the module doc)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            tasks = conn.execute(text("SELECT id, status, attempts, retries, max_retries, error, result FROM tasks"))
            rows = {f"task-{r.id}": r for r in tasks}
            logs = conn.execute(
                text(
                    "SELECT task_id, attempt, seq, lines, stream, message FROM task_logs ORDER BY task_id, attempt, seq"
                )
            ).all()
    finally:
        engine.dispose()
    by_attempt: dict[tuple[str, int], list[Any]] = {}
    for row in logs:
        # A row holds a run of `lines` lines from `seq` on, joined by newlines (migration 0008_log_runs).
        messages = row.message.split("\n") if row.lines > 1 else [row.message]
        lines = by_attempt.setdefault((f"task-{row.task_id}", row.attempt), [])
        lines.extend(SimpleNamespace(seq=row.seq + i, stream=row.stream, message=m) for i, m in enumerate(messages))
    starts, ends = runs(marker, "start"), runs(marker, "end")
    out: Counter[str] = Counter()
    examples: list[str] = []

    def bad(kind: str, task_id: str, detail: object) -> None:
        out[kind] += 1
        if len(examples) < 10:
            examples.append(f"{kind}: {task_id}: {detail}")

    for task_id in sorted(task_ids):
        t = rows.get(task_id)
        if t is None or t.status in ("pending", "running"):
            bad("not_final", task_id, t.status if t else "missing")
            continue
        problem = run_problems(starts.get(task_id, Counter()), ends.get(task_id, Counter()), t.attempts, t.retries)
        if problem:
            bad("ran_twice", task_id, problem)
        for attempt in range(1, t.attempts + 1):
            seqs = [ln.seq for ln in by_attempt.get((task_id, attempt), [])]
            if seqs != list(range(1, len(seqs) + 1)):
                bad("log_gap", task_id, f"attempt {attempt}: seqs {seqs}")
        if t.status == "success":
            final = [ln.message for ln in by_attempt.get((task_id, t.attempts), []) if ln.stream == "stdout"]
            expected = [f"one {task_id}", f"two {task_id}", f"three {task_id}"]
            if final != expected or t.result != "".join(m + "\n" for m in expected):
                bad("missing_lines", task_id, f"log {final}, result {t.result!r}")
        elif t.status == "failed" and is_lost(t.error) and t.retries >= t.max_retries:
            out["failed_agent_lost"] += 1
        else:
            bad("unexpected_status", task_id, f"{t.status}: {t.error}")
    return {
        "statuses": dict(Counter(rows[t].status for t in task_ids if t in rows)),
        "tasks_in_database": len(rows),
        "retries": sum(r.retries for r in rows.values()),
        "max_attempts": max((r.attempts for r in rows.values()), default=0),
        "duplicates": out["ran_twice"],
        "lost": out["not_final"] + out["missing_lines"],
        "log_gaps": out["log_gap"],
        "unexpected_status": out["unexpected_status"],
        "failed_agent_lost": out["failed_agent_lost"],
        "problems": examples,
    }


def run_chaos(
    root: Path,
    database_url: str | None,
    tasks: int,
    *,
    agents: int = 4,
    replicas: int = 2,
    concurrency: int = 8,
    seed: int | None = None,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> dict[str, Any]:
    """The whole run; returns the figures (see the module doc). Processes are left stopped.
    `database_url` None: the embedded SQLite with one cloud process, which the monkey kills and restarts
    as it would a replica (callers then find no cloud for a moment and send their request again)."""
    if database_url is None and replicas != 1:
        raise ValueError("SQLite serves one cloud process: replicas must be 1")
    seed = random.randrange(1 << 30) if seed is None else seed
    rate = max(100.0, tasks / 60)  # about a minute of creating under fire for the larger runs
    cluster = Cluster(root, database_url, replicas, **CLOUD_SETTINGS).start()
    db_url = database_url or f"sqlite:///{(root / 'cloud' / 'tiangong.db').resolve()}"
    try:
        lb, callers = cluster.proxy(), cluster.proxy()
        for i in range(agents):
            cluster.agent(f"chaos-{i % POOLS}", via=lb.url, max_concurrency=concurrency)
        chaos = Chaos(cluster, tasks, random.Random(seed), say)
        monkey = threading.Thread(target=chaos.monkey, args=((0.5, 2.0), (0.2, 2.5)), name="monkey")
        t0 = time.monotonic()
        monkey.start()
        try:
            chaos.create_all(callers.url, rate)
            say(f"chaos: {tasks} tasks created in {time.monotonic() - t0:.1f} s; {dict(chaos.kills)} kills so far")
        finally:
            chaos.stop_monkey.set()
            monkey.join()
        for r in cluster.replicas:
            r.wait_ready()
        _wait_final(db_url, tasks, 300 + tasks / 10, say)
        duration = time.monotonic() - t0
        for agent in cluster.agents:  # every agent's recovery is done and nothing runs any more
            agent.stop()
        figures = verify(db_url, chaos.marker, set(chaos.created.values()))
    finally:
        cluster.close()
    return {
        "tasks": tasks,
        "created": len(set(chaos.created.values())),
        "agents": agents,
        "replicas": replicas,
        "seed": seed,
        "kills": {"agent": chaos.kills["agent"], "replica": chaos.kills["replica"]},
        "caller_resends": chaos.caller_retries,
        **figures,
        "duration_s": round(duration, 1),
        "tasks_per_s": round(tasks / duration, 1),
    }


def main() -> None:
    from tests.e2e.pgdb import PgDatabases

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--sqlite", action="store_true", help="the embedded SQLite and one cloud process")
    args = ap.parse_args()
    dbs = PgDatabases()
    try:
        with tempfile.TemporaryDirectory(prefix="tiangong-chaos-") as tmp:
            url, replicas = (None, 1) if args.sqlite else (dbs.create(), args.replicas)
            figures = run_chaos(Path(tmp), url, args.tasks, agents=args.agents, replicas=replicas, seed=args.seed)
    finally:
        dbs.drop_all()
    print(json.dumps({"chaos": figures}, indent=2))
    if figures["duplicates"] or figures["lost"] or figures["log_gaps"] or figures["unexpected_status"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
