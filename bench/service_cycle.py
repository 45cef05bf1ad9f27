"""CPU of one task's database work, in one process: create + claim + finish + the sync caller's read, run
through the cloud's services on SQLite or the machine's PostgreSQL under a running event loop (as the
cloud runs them); prints JSON.

    .venv/bin/python bench/service_cycle.py [--cycles 1000] [--warmup 200] [--setups sqlite,postgres]

No HTTP, no agent, no other process: a change to the database layer (cloud/db, cloud/services) shows here
without a VM's drift between processes. To compare two builds, run it from each tree in turn, several
times alternating (docs/performance.md, issue 18).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloud.db.engine import Database, migrate  # noqa: E402
from cloud.hub import Hub  # noqa: E402
from cloud.services.agents import register_agent  # noqa: E402
from cloud.services.runs import report_result  # noqa: E402
from cloud.services.tasks import fetch  # noqa: E402
from tests.e2e.pgdb import PgDatabases  # noqa: E402
from tests.unit.cloud.conftest import AGENT_A1  # noqa: E402
from tests.unit.cloud.factory import claim_one, queue_shell  # noqa: E402
from wire.agents import AgentRegister  # noqa: E402
from wire.tasks import TaskReport, TaskStatus, parse_task_id  # noqa: E402


def cycle(db: Database) -> None:
    queue_shell(db)
    task = claim_one(db)
    report = TaskReport(task_token=task.task_token, status=TaskStatus.success, exit_code=0, result="", log_lines=0)
    with db.transaction() as conn:
        report_result(conn, task.id, report, agent_id="a1")
    number = parse_task_id(task.id)
    assert number is not None
    with db.reading() as conn:
        fetch(conn, number)


async def measure(url: str, cycles: int, warmup: int) -> dict[str, Any]:
    db = Database(url, Hub())
    try:
        migrate(db.engine)
        with db.transaction() as conn:
            register_agent(conn, AgentRegister(agent_id="a1", executors=["shell"]), AGENT_A1)
        for _ in range(warmup):
            cycle(db)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(cycles):
            cycle(db)
        return {
            "cycles": cycles,
            "cpu_us_per_cycle": round((time.process_time() - cpu) * 1e6 / cycles),
            "wall_us_per_cycle": round((time.perf_counter() - wall) * 1e6 / cycles),
        }
    finally:
        db.dispose()


def run_setup(name: str, cycles: int, warmup: int) -> dict[str, Any]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory(prefix="tiangong-cycle-") as tmp:
            return asyncio.run(measure(f"sqlite:///{tmp}/cloud.db", cycles, warmup))
    if name != "postgres":
        raise SystemExit(f"--setups: unknown setup {name!r}; expected sqlite or postgres")
    dbs = PgDatabases()
    try:
        return asyncio.run(measure(dbs.create(), cycles, warmup))
    finally:
        dbs.drop_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--setups", default="sqlite,postgres")
    args = ap.parse_args()
    out = {name: run_setup(name.strip(), args.cycles, args.warmup) for name in args.setups.split(",")}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
