"""Output caps, restarts, lost agents, pools, drains: on the module's cloud where the default settings
serve, else on a cloud of the test's own."""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.e2e.harness import AGENT, AgentClient, Cloud, wait_for

MakeCloud = Callable[..., Cloud]


def test_output_over_the_cap_keeps_head_and_tail(make_cloud: MakeCloud) -> None:
    cloud = make_cloud(max_log_bytes=4096)
    cloud.agent("local")
    task = cloud.run(type="shell", command="seq 1 5000")  # ~24 KB of output
    assert task["status"] == "success"
    messages = [ln["message"] for ln in cloud.logs(task["id"])]
    assert messages[:3] == ["1", "2", "3"]
    assert messages[-1] == "5000"
    marker = [m for m in messages if "bytes of output dropped" in m]
    assert len(marker) == 1
    assert sum(len(m) + 1 for m in messages if m not in marker) <= 4096
    assert task["result"].startswith("1\n2\n") and task["result"].endswith("4999\n5000\n")
    assert task["data"]["truncated"] is True


def test_long_tail_past_the_cap_arrives_whole(make_cloud: MakeCloud) -> None:
    """Lines past half the cap are held until the end; more of them than fit one request still arrive."""
    cloud = make_cloud(max_log_bytes=200_000)
    cloud.agent("local")
    task = cloud.run(type="shell", command="seq 1 200000", timeout=120)  # ~1.3 MB of short lines
    assert task["status"] == "success", task
    messages = [ln["message"] for ln in cloud.logs(task["id"])]
    marker = [m for m in messages if "bytes of output dropped" in m]
    assert len(marker) == 1
    tail = messages[messages.index(marker[0]) + 1 :]
    assert len(tail) > 10_000  # more than one result request may carry
    assert tail[-1] == "200000" and [int(m) for m in tail] == list(range(int(tail[0]), 200001))


def test_cloud_restart_keeps_tasks_and_logs(make_cloud: MakeCloud) -> None:
    cloud = make_cloud(process=True)
    cloud.agent("local")
    done = cloud.run(type="shell", command="echo before restart")
    cloud.restart()
    again = cloud.task(done["id"])
    assert again["status"] == "success" and again["result"] == "before restart\n"
    assert [ln["message"] for ln in cloud.logs(done["id"])] == ["before restart"]
    # The agent kept going across the restart and still runs new work.
    after = cloud.run(type="shell", command="echo after restart")
    assert after["result"] == "after restart\n"


def test_killed_agent_leaves_task_failed_agent_lost(make_cloud: MakeCloud) -> None:
    cloud = make_cloud(lease_seconds=2, heartbeat_seconds=0.5)
    agent = cloud.agent("local")
    created = cloud.create(type="shell", command="echo started; sleep 60").json()
    wait_for(lambda: cloud.logs(created["id"]), 20, "the first log line")
    agent.kill()
    done = cloud.wait_final(created["id"], 30)
    assert done["status"] == "failed"
    assert done["error"] == "agent lost"
    assert "agent lost" in cloud.logs(created["id"])[-1]["message"]


def test_pool_of_agents_never_runs_a_task_twice(cloud: Cloud, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cloud.agent("pool", max_concurrency=4)
    cloud.agent("pool", max_concurrency=4)
    ids = [
        cloud.create(agent_id="pool", type="shell", command=f'echo "$TIANGONG_TASK_ID" >> {runs}').json()["id"]
        for _ in range(120)
    ]
    for task_id in ids:
        assert cloud.wait_final(task_id)["status"] == "success"
    counts = Counter(runs.read_text().split())
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1


def test_offline_agent_gets_409(make_cloud: MakeCloud) -> None:
    cloud = make_cloud(agent_offline_seconds=1)
    r = httpx.post(
        f"{cloud.url}/api/v1/agents/register", json={"agent_id": "ghost"}, headers={"Authorization": f"Bearer {AGENT}"}
    )
    assert r.status_code == 200
    wait_for(lambda: cloud.http.get("/api/v1/agents/ghost").json()["status"] == "offline", 10, "ghost offline")
    r = cloud.create(agent_id="ghost", type="shell", command="echo")
    assert r.status_code == 409 and "offline" in r.json()["error"]


def test_cancel_pending_task(cloud: Cloud) -> None:
    cloud.agent("one-slot", max_concurrency=1)
    busy = cloud.create(agent_id="one-slot", type="shell", command="sleep 30").json()
    wait_for(lambda: cloud.task(busy["id"])["status"] == "running", 20, "the first task to run")
    queued = cloud.create(agent_id="one-slot", type="shell", command="echo must not run").json()
    assert cloud.task(queued["id"])["status"] == "pending"
    r = cloud.http.post(f"/api/v1/tasks/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    cloud.http.post(f"/api/v1/tasks/{busy['id']}/cancel")
    assert cloud.wait_final(busy["id"])["status"] == "canceled"
    final = cloud.task(queued["id"])
    assert final["status"] == "canceled" and final["started_at"] is None and final["result"] == ""


def test_cancel_reaches_a_task_started_after_the_last_heartbeat(make_cloud: MakeCloud) -> None:
    """With a minute between beats, the cancel of a task that started since the last beat still
    arrives at once: the held heartbeat is woken for it, not only for the tasks it listed."""
    cloud = make_cloud(heartbeat_seconds=60, lease_seconds=600, agent_offline_seconds=600)
    cloud.agent("solo")
    created = cloud.create(agent_id="solo", type="shell", command="echo start; sleep 120").json()
    wait_for(lambda: cloud.logs(created["id"]), 20, "the task to start")
    assert cloud.http.post(f"/api/v1/tasks/{created['id']}/cancel").status_code == 200
    done = cloud.wait_final(created["id"], 30)
    assert done["status"] == "canceled" and done["error"] == "canceled by request", done


def test_sigterm_drains_running_tasks(cloud: Cloud) -> None:
    agent = cloud.agent("drains", TIANGONG_SHUTDOWN_GRACE_SECONDS="20")
    created = cloud.create(agent_id="drains", type="shell", command="echo start; sleep 1; echo finished").json()
    wait_for(lambda: cloud.logs(created["id"]), 20, "the task to start")
    agent.stop(signal.SIGTERM)
    assert agent.proc.returncode == 0
    done = cloud.task(created["id"])
    assert done["status"] == "success" and done["result"] == "start\nfinished\n"


def test_sigterm_cancels_what_outlives_the_grace(cloud: Cloud) -> None:
    agent = cloud.agent("short-grace", TIANGONG_SHUTDOWN_GRACE_SECONDS="0.5")
    command = "echo start; sleep 60"
    created = cloud.create(agent_id="short-grace", type="shell", command=command, params={"kill_grace_s": 1}).json()
    wait_for(lambda: cloud.logs(created["id"]), 20, "the task to start")
    agent.stop(signal.SIGTERM)
    done = cloud.task(created["id"])
    assert done["status"] == "canceled" and "shutting down" in done["error"]


def test_sync_wait_times_out_and_task_goes_on(cloud: Cloud) -> None:
    r = cloud.create(type="shell", command="sleep 2; echo late", sync=True, timeout=1)
    assert r.status_code == 201
    body = r.json()
    assert body["sync_timed_out"] is True and body["status"] == "running"
    assert cloud.wait_final(body["id"])["result"] == "late\n"


def test_cloud_sigterm_answers_long_polls_and_exits(make_cloud: MakeCloud) -> None:
    """A stopping cloud answers a held claim, heartbeat and sync wait at once instead of letting them
    run out (25 s, 25 s, 60 s here), then exits cleanly."""
    cloud = make_cloud(process=True)
    agent, busy = AgentClient(cloud.url, timeout=90), AgentClient(cloud.url)
    for client, agent_id in ((agent, "idle"), (busy, "busy")):  # each agent id with its own token
        r = client.post("/api/v1/agents/register", json={"agent_id": agent_id, "executors": ["shell"]})
        assert r.status_code == 200, r.text
    busy.close()
    with contextlib.closing(agent), ThreadPoolExecutor(3) as pool:
        claim = pool.submit(agent.post, "/api/v1/agents/idle/claim", json={"capacity": 1, "wait_s": 25})
        beat = pool.submit(agent.post, "/api/v1/agents/idle/heartbeat", json={"running": [], "wait_s": 25})
        sync = pool.submit(cloud.create, agent_id="busy", type="shell", command="echo", sync=True, timeout=60)
        wait_for(lambda: cloud.http.get("/api/v1/tasks", params={"agent_id": "busy"}).json(), 20, "the sync task")
        assert not (claim.done() or beat.done() or sync.done())
        started = time.monotonic()
        assert cloud.proc is not None
        cloud.proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once shut down, as a service manager expects of a stopped service.
        assert cloud.proc.wait(timeout=20) in (0, -signal.SIGTERM)
        claimed, beaten, waited = claim.result(), beat.result(), sync.result()
    assert time.monotonic() - started < 20  # well before any of the waits would have run out
    assert claimed.status_code == 200 and claimed.json() == []
    assert beaten.status_code == 200 and beaten.json()["cancel"] == []
    assert waited.status_code == 201 and waited.json()["status"] == "pending" and waited.json()["sync_timed_out"]
