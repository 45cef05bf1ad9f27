"""Retries (automatic and by request) and delivery expiry, through the real cloud on both databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import AgentClient, Cloud, wait_for

MakeCloud = Callable[..., Cloud]

CLOUD_SETTINGS = {"lease_seconds": 2, "heartbeat_seconds": 0.5, "reaper_interval_seconds": 0.2}
"""The module's cloud: a 2 s lease and a background pass every 0.2 s, with its agent `local`."""


@pytest.fixture
def quick(cloud: Cloud) -> Cloud:
    return cloud


@pytest.fixture
def scripted(quick: Cloud, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """The agent protocol spoken by the test itself, as an agent of the test's own (registered, never
    heartbeating); its id is in the `X-Agent-Id` header."""
    client = quick.scripted(request.node.name, executors=["shell"], timeout=30)
    yield client
    client.close()


def agent_id(agent: httpx.Client) -> str:
    return agent.headers["X-Agent-Id"]


def claim(agent: httpx.Client) -> list[dict[str, Any]]:
    r = agent.post(f"/api/v1/agents/{agent_id(agent)}/claim", json={"capacity": 5, "wait_s": 0})
    assert r.status_code == 200, r.text
    return list(r.json())


def messages(cloud: Cloud, task_id: str) -> list[str]:
    return [line["message"] for line in cloud.logs(task_id)]


def test_any_failure_is_retried_until_max_retries(quick: Cloud) -> None:
    task = quick.run(
        type="shell", command="echo try; exit 3", max_retries=2, retry_backoff=0.05, retry_on="any", timeout=60
    )
    assert task["status"] == "failed"
    assert task["attempts"] == 3 and task["retries"] == 2
    assert task["exit_code"] == 3
    lines = messages(quick, task["id"])
    assert lines.count("try") == 3
    assert [ln["attempt"] for ln in quick.logs(task["id"]) if ln["message"] == "try"] == [1, 2, 3]
    assert sum("retry 1 of 2 in" in m for m in lines) == 1 and sum("retry 2 of 2 in" in m for m in lines) == 1


def test_a_failure_of_the_work_is_not_retried_by_default(quick: Cloud) -> None:
    task = quick.run(type="shell", command="exit 3", max_retries=2, retry_backoff=0.05)
    assert task["status"] == "failed" and task["attempts"] == 1 and task["retries"] == 0


def test_a_lost_agent_is_retried_and_its_late_result_refused(quick: Cloud, scripted: httpx.Client) -> None:
    created = quick.create(agent_id=agent_id(scripted), type="shell", command="work", max_retries=1, retry_backoff=0.1)
    task_id = created.json()["id"]
    [first] = claim(scripted)
    # No heartbeat: the lease (2 s) runs out and the task goes back to pending for attempt 2.
    again = wait_for(lambda: claim(scripted), 20, "the retry to be handed out")
    assert [a["id"] for a in again] == [task_id] and again[0]["attempt"] == 2
    task = quick.task(task_id)
    assert task["status"] == "running" and task["retries"] == 1
    assert task["last_error"] == "agent lost: no heartbeat before the lease expired"
    # The first attempt comes back late: its log and result are refused and change nothing.
    late = {"task_token": first["task_token"], "lines": [{"seq": 1, "message": "late"}]}
    assert scripted.post(f"/api/v1/agent/tasks/{task_id}/logs", json=late).status_code == 409
    stale = {"task_token": first["task_token"], "status": "success", "log_lines": 0}
    assert scripted.post(f"/api/v1/agent/tasks/{task_id}/result", json=stale).status_code == 409
    fresh = {"task_token": again[0]["task_token"], "status": "success", "result": "second", "log_lines": 0}
    assert scripted.post(f"/api/v1/agent/tasks/{task_id}/result", json=fresh).status_code == 200
    done = quick.task(task_id)
    assert (done["status"], done["result"], done["attempts"]) == ("success", "second", 2)
    assert "late" not in messages(quick, task_id)


def test_a_retry_waits_out_its_backoff_with_next_retry_at_in_the_future(quick: Cloud, scripted: httpx.Client) -> None:
    created = quick.create(agent_id=agent_id(scripted), type="shell", command="work", max_retries=1, retry_backoff=60)
    task_id = created.json()["id"]
    assert created.json()["next_retry_at"] is None
    assert claim(scripted)
    # No heartbeat: after the lease (2 s) the task waits for attempt 2, 30..60 s out (jitter: upper half).
    waiting = wait_for(lambda: (t := quick.task(task_id))["retries"] == 1 and t, 20, "the retry to be scheduled")
    assert waiting["status"] == "pending" and waiting["attempts"] == 1
    at = datetime.fromisoformat(waiting["next_retry_at"])
    now = datetime.now(UTC)
    assert now + timedelta(seconds=25) < at <= now + timedelta(seconds=60), (now, at)
    assert claim(scripted) == []  # not before next_retry_at
    assert quick.http.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 200


def test_a_lost_agent_without_retries_left_ends_the_task(quick: Cloud, scripted: httpx.Client) -> None:
    task_id = quick.create(agent_id=agent_id(scripted), type="shell", command="work").json()["id"]
    assert claim(scripted)
    done = quick.wait_final(task_id, 20)
    assert (done["status"], done["error"]) == ("failed", "agent lost")


def test_retry_by_request_runs_a_finished_task_again(quick: Cloud, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    command = f"if [ -f {marker} ]; then echo second; else touch {marker}; echo first; exit 1; fi"
    task = quick.run(type="shell", command=command)
    assert task["status"] == "failed"
    r = quick.http.post(f"/api/v1/tasks/{task['id']}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("pending", "running") and r.json()["last_error"]
    done = quick.wait_final(task["id"], 30)
    assert (done["status"], done["result"], done["attempts"], done["retries"]) == ("success", "second\n", 2, 0)
    lines = messages(quick, task["id"])
    assert lines.index("first") < lines.index("retried by request (was failed)") < lines.index("second")


def test_retry_by_request_refuses_what_is_not_finished(quick: Cloud) -> None:
    task = quick.create(type="shell", command="sleep 30").json()
    r = quick.http.post(f"/api/v1/tasks/{task['id']}/retry")
    assert r.status_code == 409
    assert "only a finished task can be retried" in r.json()["error"]
    assert quick.http.post("/api/v1/tasks/task-999999/retry").status_code == 404
    quick.http.post(f"/api/v1/tasks/{task['id']}/cancel")


def test_an_undelivered_task_fails_and_never_runs(quick: Cloud, scripted: httpx.Client, tmp_path: Path) -> None:
    # `scripted` is online (registered) but never claims.
    marker = tmp_path / "ran"
    r = quick.create(agent_id=agent_id(scripted), type="shell", command=f"touch {marker}", expires_in=1)
    assert r.status_code == 201
    assert r.json()["expires_at"] is not None
    done = quick.wait_final(r.json()["id"], 20)
    assert done["status"] == "failed"
    assert done["error"] == f"not delivered: agent {agent_id(scripted)} did not claim it within 1 s"
    assert claim(scripted) == []  # an expired task is never handed out
    assert not marker.exists()


def test_a_claim_never_hands_out_an_expired_task_even_before_the_expiry_pass(make_cloud: MakeCloud) -> None:
    """The background pass runs at start and then once an hour: only the claim's own check can refuse it."""
    cloud = make_cloud(reaper_interval_seconds="3600")
    agent = AgentClient(cloud.url, timeout=30)
    r = agent.post("/api/v1/agents/register", json={"agent_id": "late", "executors": ["shell"]})
    assert r.status_code == 200
    created = cloud.create(agent_id="late", type="shell", command="true", expires_in=1).json()
    expires_at = datetime.fromisoformat(created["expires_at"])
    wait_for(lambda: datetime.now(UTC) > expires_at, 10, "the delivery window to pass")
    r = agent.post("/api/v1/agents/late/claim", json={"capacity": 5, "wait_s": 0})
    assert r.status_code == 200 and r.json() == []
    task = cloud.task(created["id"])
    assert (task["status"], task["attempts"], task["error"]) == ("pending", 0, "")  # no expiry pass yet
    agent.close()


def test_an_undelivered_task_with_retries_gets_a_new_delivery_window(quick: Cloud, scripted: httpx.Client) -> None:
    r = quick.create(
        agent_id=agent_id(scripted), type="shell", command="x", expires_in=1, max_retries=1, retry_backoff=0.1
    )
    task_id = r.json()["id"]
    retried = wait_for(lambda: (t := quick.task(task_id))["retries"] == 1 and t, 20, "the first expiry")
    assert retried["status"] == "pending" and retried["last_error"].startswith("not delivered: ")
    done = quick.wait_final(task_id, 20)
    assert (done["status"], done["retries"], done["attempts"]) == ("failed", 1, 0)


def test_retry_fields_are_checked(quick: Cloud) -> None:
    r = quick.create(type="shell", command="true", max_retries=-1)
    assert r.status_code == 400 and r.json()["error"].startswith("max_retries: ")
    r = quick.create(type="shell", command="true", retry_on="sometimes")
    assert r.status_code == 400 and r.json()["error"].startswith("retry_on: ")
    r = quick.create(type="shell", command="true", expires_in=0)
    assert r.status_code == 400 and r.json()["error"].startswith("expires_in: ")


def test_a_task_that_keeps_killing_its_agent_stops_at_max_retries(make_cloud: MakeCloud) -> None:
    """Each attempt SIGKILLs the agent running it; the test restarts the agent (as a supervisor would).
    A cloud of its own: the module's keeps its agent alive."""
    quick = make_cloud(**CLOUD_SETTINGS)
    quick.agent("local", max_concurrency=2)
    task_id = quick.create(type="shell", command="echo fatal; kill -9 $PPID", max_retries=2, retry_backoff=0.1).json()[
        "id"
    ]

    def final_or_restarted() -> dict[str, Any] | None:
        task = quick.task(task_id)
        if task["status"] in ("success", "failed", "timeout", "canceled"):
            return task
        if quick.agents[-1].proc.poll() is not None:  # killed by the task: start another process
            quick.agent("local", max_concurrency=2)
        return None

    done = wait_for(final_or_restarted, 90, "the task to run out of retries")
    assert (done["status"], done["error"]) == ("failed", "agent lost")
    assert (done["attempts"], done["retries"]) == (3, 2)


def test_a_stale_process_heartbeat_neither_renews_the_new_attempt_nor_keeps_running(
    quick: Cloud, scripted: httpx.Client
) -> None:
    """Two processes of one agent id: the one that lost attempt 1 keeps heartbeating it, naming its token."""
    task_id = quick.create(
        agent_id=agent_id(scripted), type="shell", command="work", max_retries=1, retry_backoff=0.1
    ).json()["id"]
    [first] = claim(scripted)
    [second] = wait_for(lambda: claim(scripted), 20, "attempt 2 to be handed out")
    n = task_id.removeprefix("task-")

    def lease() -> Any:
        return quick.sql(f"SELECT lease_expires_at FROM tasks WHERE id = {n}")[0][0]

    before = lease()
    stale = {"running": [task_id], "tokens": {task_id: first["task_token"]}}
    r = scripted.post(f"/api/v1/agents/{agent_id(scripted)}/heartbeat", json=stale)
    assert r.status_code == 200 and r.json()["cancel"] == [task_id]  # stop what you still run of attempt 1
    assert lease() == before
    current = {"running": [task_id], "tokens": {task_id: second["task_token"]}}
    r = scripted.post(f"/api/v1/agents/{agent_id(scripted)}/heartbeat", json=current)
    assert r.status_code == 200 and r.json()["cancel"] == []
    assert lease() > before
