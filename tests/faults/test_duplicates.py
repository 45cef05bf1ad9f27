"""Duplicate log batches and results, sent by hand over HTTP with the agent token (as a retrying agent
or a replayed request would): each line and the result are stored once, also when they race."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.harness import AgentClient
from tests.faults.conftest import MakeCluster
from tests.faults.harness import Cluster

pytestmark = pytest.mark.slow

RACERS = 8


@pytest.fixture
def cluster(backend: str, make_cluster: MakeCluster) -> Cluster:
    return make_cluster(backend)


@pytest.fixture
def agent(cluster: Cluster) -> Iterator[httpx.Client]:
    """The agent protocol spoken by the test, as agent `byhand`."""
    client = AgentClient(cluster.a.url, timeout=60)
    r = client.post("/api/v1/agents/register", json={"agent_id": "byhand", "executors": ["shell"]})
    assert r.status_code == 200, r.text
    yield client
    client.close()


def claimed(cluster: Cluster, agent: httpx.Client) -> dict[str, Any]:
    """A new task, claimed by hand: its assignment (id and task_token)."""
    task = cluster.a.create(agent_id="byhand", type="shell", command="echo").json()
    r = agent.post("/api/v1/agents/byhand/claim", json={"capacity": 1, "wait_s": 0})
    assert r.status_code == 200, r.text
    [assignment] = r.json()
    assert assignment["id"] == task["id"]
    return dict(assignment)


def lines(*seqs: int) -> list[dict[str, Any]]:
    return [{"seq": s, "stream": "stdout", "message": f"line {s}"} for s in seqs]


def stored(cluster: Cluster, task_id: str) -> list[tuple[int, str]]:
    return [(ln["seq"], ln["message"]) for ln in cluster.a.logs(task_id)]


def test_repeated_batches_and_results_are_stored_once(cluster: Cluster, agent: httpx.Client) -> None:
    a = claimed(cluster, agent)
    logs, result = f"/api/v1/agent/tasks/{a['id']}/logs", f"/api/v1/agent/tasks/{a['id']}/result"
    for batch, next_seq in [((1, 2), 3), ((1, 2), 3), ((2, 3), 4), ((1, 2, 3), 4)]:
        r = agent.post(logs, json={"task_token": a["task_token"], "lines": lines(*batch)})
        assert (r.status_code, r.json()) == (200, {"next_seq": next_seq}), r.text
    report = {"task_token": a["task_token"], "status": "success", "result": "once", "log_lines": 5}
    for tail in [(4, 5), (4, 5), (5,), ()]:  # the same result resent, with or without its lines
        r = agent.post(result, json={**report, "lines": lines(*tail)})
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
    assert stored(cluster, a["id"]) == [(s, f"line {s}") for s in range(1, 6)]
    task = cluster.a.task(a["id"])
    assert (task["status"], task["result"], task["attempts"]) == ("success", "once", 1)
    # A different outcome for the same attempt is refused and changes nothing.
    r = agent.post(result, json={**report, "status": "failed", "result": "other"})
    assert r.status_code == 409
    assert cluster.a.task(a["id"])["result"] == "once"


def test_racing_duplicates_are_stored_once(cluster: Cluster, agent: httpx.Client) -> None:
    a = claimed(cluster, agent)
    logs, result = f"/api/v1/agent/tasks/{a['id']}/logs", f"/api/v1/agent/tasks/{a['id']}/result"
    batch = {"task_token": a["task_token"], "lines": lines(*range(1, 51))}
    report = {"task_token": a["task_token"], "status": "success", "result": "raced", "log_lines": 60}
    report["lines"] = lines(*range(51, 61))

    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=cluster.a.url, headers=dict(agent.headers), timeout=60) as own:
            return own.post(path, json=body)

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(lambda _: post(logs, batch), range(RACERS)))
    # Each copy is stored or recognised as a repeat; a copy that lost a race may be told to resend.
    for r in answers:
        assert r.status_code == 200 or (r.status_code == 409 and r.json().get("next_seq") == 1), r.text
    assert any(r.status_code == 200 for r in answers)
    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(lambda _: post(result, report), range(RACERS)))
    for r in answers:
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
    assert stored(cluster, a["id"]) == [(s, f"line {s}") for s in range(1, 61)]
    task = cluster.a.task(a["id"])
    assert (task["status"], task["result"]) == ("success", "raced")
