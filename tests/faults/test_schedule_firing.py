"""Schedules across replicas and restarts: two cloud replicas on one PostgreSQL database, both scanning
for due schedules twenty times a second, fire each run exactly once; a cloud stopped over a schedule's
time fires it once after it restarts (`missed: run_once`) or records it as skipped (`missed: skip`)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.harness import wait_for
from tests.faults.conftest import MakeCluster
from tests.faults.harness import Replica

pytestmark = pytest.mark.slow

TASK = {"agent_id": "sched", "type": "shell", "command": "echo fired"}


def get(replica: Replica, schedule_id: str) -> dict[str, Any]:
    r = replica.http.get(f"/api/v1/schedules/{schedule_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def created(replica: Replica, name: str) -> list[dict[str, Any]]:
    tasks = replica.http.get("/api/v1/tasks", params={"page_size": 100}).json()["list"]
    return [t for t in tasks if t["cron_source"] == name]


def test_two_replicas_fire_each_run_once(make_cluster: MakeCluster) -> None:
    cluster = make_cluster("postgres", replicas=2, schedule_interval_seconds=0.05)
    cluster.agent("sched", via=cluster.b.url)
    body = {"name": "both replicas", "cron": "* * * * * *", "task": TASK}
    s = cluster.a.http.post("/api/v1/schedules", json=body).json()
    wait_for(lambda: get(cluster.b, s["id"])["runs"] >= 6, 30, "six firings")
    runs = cluster.b.http.patch(f"/api/v1/schedules/{s['id']}", json={"enabled": False}).json()["runs"]
    tasks = created(cluster.a, "both replicas")
    assert len(tasks) == runs
    # One task per second of the cron: two replicas firing the same run would make two within a second.
    times = sorted(datetime.fromisoformat(t["created_at"]) for t in tasks)
    assert all(b - a > timedelta(seconds=0.5) for a, b in itertools.pairwise(times)), times
    for t in tasks:
        assert cluster.a.wait_final(t["id"])["status"] == "success"


def test_a_run_missed_while_the_cloud_was_down_runs_once_or_is_skipped(make_cluster: MakeCluster, backend: str) -> None:
    cluster = make_cluster(backend, schedule_missed_grace_seconds=1)
    cluster.agent("sched")
    cloud = cluster.a
    at = datetime.now(UTC) + timedelta(seconds=4)
    ids = {}
    for missed in ("run_once", "skip"):
        body = {"name": f"missed {missed}", "cron": "@once", "start_at": at.isoformat(), "missed": missed, "task": TASK}
        r = cloud.http.post("/api/v1/schedules", json=body)
        assert r.status_code == 201, r.text
        ids[missed] = r.json()["id"]
    cloud.stop()
    assert datetime.now(UTC) < at, "the cloud took too long to stop: the runs were not missed"
    wait_for(lambda: datetime.now(UTC) > at + timedelta(seconds=1.5), 10, "the runs' time and grace to pass")
    cloud.start()

    ran = wait_for(lambda: (g := get(cloud, ids["run_once"]))["runs"] == 1 and g, 30, "the missed run, run once")
    assert not ran["enabled"] and ran["last_error"] == ""
    task = cloud.wait_final(ran["last_task_id"])
    assert task["status"] == "success" and task["cron_source"] == "missed run_once"
    assert datetime.fromisoformat(task["created_at"]) > at + timedelta(seconds=1)  # after the restart

    skipped = wait_for(lambda: (g := get(cloud, ids["skip"]))["last_error"] and g, 30, "the skipped run recorded")
    assert "missed" in skipped["last_error"] and skipped["runs"] == 0 and not skipped["enabled"]
    assert created(cloud, "missed skip") == [] and len(created(cloud, "missed run_once")) == 1
