"""The chaos run at CI size (bench/chaos.py; `make bench` runs 10,000): 600 tasks over 4 agents and 2
PostgreSQL replicas (or the one cloud process SQLite allows) while agents and replicas are SIGKILLed and
restarted at random, each kind at least once. Nothing is lost, nothing runs twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import run_chaos
from tests.e2e.pgdb import PgDatabases

pytestmark = pytest.mark.slow

TASKS = 600


def test_chaos_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    dbs = PgDatabases()
    try:
        figures = run_chaos(tmp_path, dbs.create(), TASKS, agents=4, replicas=2)
    finally:
        dbs.drop_all()
    check(figures)


def test_chaos_on_sqlite_with_cloud_restarts(tmp_path: Path) -> None:
    """The embedded database: its one cloud process is killed and restarted among the agents."""
    check(run_chaos(tmp_path, None, TASKS, agents=4, replicas=1))


def check(figures: dict[str, Any]) -> None:
    """Every task created once and final; no attempt ran twice; no log line or result missing."""
    print(json.dumps(figures, indent=2))
    assert figures["created"] == TASKS and figures["tasks_in_database"] == TASKS  # request_id: no doubles
    assert figures["kills"]["agent"] >= 1 and figures["kills"]["replica"] >= 1
    assert figures["duplicates"] == 0, figures["problems"]
    assert figures["lost"] == 0, figures["problems"]
    assert figures["log_gaps"] == 0 and figures["unexpected_status"] == 0, figures["problems"]
    statuses = figures["statuses"]
    assert statuses.get("success", 0) + statuses.get("failed", 0) == TASKS
    assert statuses.get("failed", 0) == figures["failed_agent_lost"]
