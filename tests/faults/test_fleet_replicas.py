"""Fleet runs across replicas: two cloud replicas on one PostgreSQL database, both moving every run on
fifty times a second and woken by each child's end, never start a target twice or more targets at once
than max_concurrency allows, and never collide doing so (every step is a compare-and-set)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import peak
from tests.faults.conftest import MakeCluster

pytestmark = pytest.mark.slow

AGENTS = [f"rep-{i}" for i in range(4)]


def _most_running(marker: Path, ids: set[str]) -> int:
    """The most of `ids` whose commands ran at one instant, as the commands recorded it on this machine's
    one clock (the rows' created_at and finished_at come from two replicas' clocks, which agree only to
    within a fraction of a millisecond: too coarse for a slot freed and reused at once)."""
    edges = []
    for line in marker.read_text().splitlines():
        task_id, kind, stamp = line.split()
        if task_id in ids:
            edges.append((int(stamp), 1 if kind == "start" else -1))
    return peak(edges)


def test_two_replicas_never_start_a_target_twice(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING, logger="tiangong.cloud")
    cluster = make_cluster("postgres", replicas=2, fleet_interval_seconds=0.02)
    for i, agent_id in enumerate(AGENTS):
        cluster.agent(agent_id, via=(cluster.a if i % 2 else cluster.b).url, max_concurrency=4)
    marker = tmp_path / "runs"
    # Each child records its start and end; the pause makes a third child at once show as an overlap.
    record = f'echo "$TIANGONG_TASK_ID {{}} $(date +%s%N)" >> {marker}'
    command = f"{record.format('start')}; sleep 0.1; {record.format('end')}"
    body: dict[str, Any] = {"type": "shell", "command": command, "agent_selector": {"globs": ["rep-*"]}}
    runs = []
    for i in range(6):  # created on both replicas, all going at once
        replica = cluster.a if i % 2 else cluster.b
        r = replica.http.post("/api/v1/tasks", json={**body, "max_concurrency": 2, "max_errors": "100%"})
        assert r.status_code == 201, r.text
        runs.append(r.json()["id"])
    for run_id in runs:
        parent = cluster.a.wait_final(run_id)
        assert parent["status"] == "success", parent
        assert parent["attempts"] == len(AGENTS)
        kids = cluster.b.http.get("/api/v1/tasks", params={"parent_id": run_id, "page_size": 100}).json()["list"]
        assert sorted(k["agent_id"] for k in kids) == AGENTS  # each target once
        assert _most_running(marker, {k["id"] for k in kids}) <= 2
    collided = [r.getMessage() for r in caplog.records if r.name == "tiangong.cloud" and "fleet" in r.getMessage()]
    assert collided == []
