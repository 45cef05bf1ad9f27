"""SIGKILL of an agent mid-task: the attempt ends `agent lost` (or is retried), the restarted agent never
runs it again, kills what its previous life left running, and delivers what it had not sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import wait_for
from tests.faults.conftest import MakeCluster
from tests.faults.harness import Replica, kill_pid, mark, marks, pid_running
from wire.tasks import is_lost

pytestmark = pytest.mark.slow

QUICK = {"lease_seconds": 3, "heartbeat_seconds": 0.5, "reaper_interval_seconds": 0.2}


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Path]:
    """A file the tasks wait on while it exists; removed at the end so no task process outlives the test."""
    path = tmp_path / "hold"
    path.touch()
    yield path
    path.unlink(missing_ok=True)


def held_command(marker: Path, hold: Path) -> str:
    wait = f"while [ -e {hold} ]; do sleep 0.05; done"
    return f"{mark(marker)}; echo started; {wait}; {mark(marker, 'end')}; echo finished"


def messages(cloud: Replica, task_id: str) -> list[str]:
    return [line["message"] for line in cloud.logs(task_id)]


def started_pid(cloud: Replica, marker: Path, task_id: str, runs: int = 1) -> int:
    """Wait until the task's `runs`-th run has started and shipped its first line; its shell's pid."""
    wait_for(lambda: messages(cloud, task_id).count("started") >= runs, 30, f"run {runs} of {task_id} to start")
    return marks(marker).get(task_id, [])[runs - 1]


def test_killed_agent_fails_the_task_after_the_lease(
    backend: str, make_cluster: MakeCluster, tmp_path: Path, hold: Path
) -> None:
    cluster = make_cluster(backend, **QUICK)
    agent = cluster.agent("crash")
    marker = tmp_path / "marker"
    task_id = cluster.a.create(agent_id="crash", type="shell", command=held_command(marker, hold)).json()["id"]
    pid = started_pid(cluster.a, marker, task_id)
    try:
        agent.kill()
        done = cluster.a.wait_final(task_id, 30)
        assert done["status"] == "failed" and is_lost(done["error"]), done
        # The restarted agent (same data dir) runs new work and never the old attempt, which is final.
        agent.start().wait_registered()
        after = cluster.a.run(agent_id="crash", type="shell", command="echo after")
        assert after["status"] == "success", after
    finally:
        kill_pid(pid)
    assert marks(marker)[task_id] == [pid]
    again = cluster.a.task(task_id)
    assert (again["status"], again["attempts"]) == ("failed", 1)


def test_restarted_agent_reports_the_interrupted_attempt_and_kills_its_process(
    backend: str, make_cluster: MakeCluster, tmp_path: Path, hold: Path
) -> None:
    """With a long lease only the restarted agent can end the attempt early: from what it left on disk."""
    cluster = make_cluster(backend, lease_seconds=120, heartbeat_seconds=0.5)
    agent = cluster.agent("crash")
    marker = tmp_path / "marker"
    task_id = cluster.a.create(agent_id="crash", type="shell", command=held_command(marker, hold)).json()["id"]
    pid = started_pid(cluster.a, marker, task_id)
    try:
        agent.kill()
        assert pid_running(pid)  # the task's process group outlives a SIGKILLed agent
        agent.start().wait_registered()
        done = cluster.a.wait_final(task_id, 30)
        assert done["status"] == "failed", done
        assert done["error"] == "agent lost: the agent restarted while the task was running"
        # Killed while the hold file still exists: nothing else would have stopped it.
        wait_for(lambda: not pid_running(pid), 30, "the orphaned task process to be killed")
    finally:
        kill_pid(pid)
    assert marks(marker)[task_id] == [pid]
    assert task_id not in marks(marker, "end")


def test_killed_agent_task_is_retried_once_per_loss(
    backend: str, make_cluster: MakeCluster, tmp_path: Path, hold: Path
) -> None:
    cluster = make_cluster(backend, **QUICK)
    agent = cluster.agent("crash")
    marker = tmp_path / "marker"
    created = cluster.a.create(
        agent_id="crash", type="shell", command=held_command(marker, hold), max_retries=2, retry_backoff=0.2
    )
    task_id = created.json()["id"]
    first = started_pid(cluster.a, marker, task_id)
    try:
        agent.kill()
        agent.start().wait_registered()
        second = started_pid(cluster.a, marker, task_id, runs=2)  # attempt 2, on the restarted agent
        running = cluster.a.task(task_id)
        assert (running["status"], running["attempts"], running["retries"]) == ("running", 2, 1)
        assert is_lost(running["last_error"])
        hold.unlink()
        done = cluster.a.wait_final(task_id, 30)
    finally:
        kill_pid(first)
    assert (done["status"], done["attempts"], done["retries"], done["result"]) == (
        "success",
        2,
        1,
        "started\nfinished\n",
    )
    assert marks(marker)[task_id] == [first, second]  # one run per attempt
    log = cluster.a.logs(task_id)
    assert [ln["message"] for ln in log if ln["stream"] == "stdout"] == ["started", "started", "finished"]
    notes = [ln["message"] for ln in log if ln["stream"] == "system"]
    assert sum("retry 1 of 2" in m for m in notes) == 1 and all(is_lost(m.split(";")[0]) for m in notes), notes
    assert log[-2]["message"] == "started"  # the system lines belong to the first attempt


def test_result_in_the_outbox_survives_an_agent_crash(backend: str, make_cluster: MakeCluster, tmp_path: Path) -> None:
    """The agent has the result but cannot send it (network cut), and is SIGKILLed: its next life sends it."""
    cluster = make_cluster(backend, lease_seconds=120, heartbeat_seconds=0.5)
    proxy = cluster.proxy(record=True)
    # Long-poll HTTP: the test looks for the result request in the proxy (WebSocket frames are masked).
    agent = cluster.agent("crash", via=proxy.url, agent_channel="http")
    marker, go = tmp_path / "marker", tmp_path / "go"
    command = f"{mark(marker)}; echo one; while [ ! -e {go} ]; do sleep 0.05; done; echo two; echo three"
    task_id = cluster.a.create(agent_id="crash", type="shell", command=command).json()["id"]
    wait_for(lambda: messages(cluster.a, task_id) == ["one"], 30, "the first line")
    proxy.pause("hold")
    go.touch()
    # The agent has the outcome once it sends it; the request is held in the proxy, never delivered.
    result_path = f"POST /api/v1/agent/tasks/{task_id}/result".encode()
    wait_for(lambda: result_path in proxy.held(), 30, "the agent to send its result")
    agent.kill()
    proxy.pause("drop")  # what the dead agent sent is thrown away, not delivered late
    proxy.resume()
    agent.start().wait_registered()
    done = cluster.a.wait_final(task_id, 30)
    assert (done["status"], done["result"], done["attempts"]) == ("success", "one\ntwo\nthree\n", 1), done
    assert messages(cluster.a, task_id) == ["one", "two", "three"]
    assert len(marks(marker)[task_id]) == 1
