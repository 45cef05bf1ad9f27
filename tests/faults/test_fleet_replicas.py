"""Fleet runs across replicas: two cloud replicas on one PostgreSQL database, both moving every run on
fifty times a second and woken by each child's end, never start a target twice or more targets at once
than max_concurrency allows, and never collide doing so (every step is a compare-and-set)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.e2e.test_fleet import most_at_once
from tests.faults.conftest import MakeCluster

pytestmark = pytest.mark.slow

AGENTS = [f"rep-{i}" for i in range(4)]


def test_two_replicas_never_start_a_target_twice(make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tiangong.cloud")
    cluster = make_cluster("postgres", replicas=2, fleet_interval_seconds=0.02)
    for i, agent_id in enumerate(AGENTS):
        cluster.agent(agent_id, via=(cluster.a if i % 2 else cluster.b).url, max_concurrency=4)
    body: dict[str, Any] = {"type": "shell", "command": "true", "agent_selector": {"globs": ["rep-*"]}}
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
        assert most_at_once(kids) <= 2
    collided = [r.getMessage() for r in caplog.records if r.name == "tiangong.cloud" and "fleet" in r.getMessage()]
    assert collided == []
