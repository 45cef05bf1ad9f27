"""The agent's own guarantees across deliveries and restarts: a claim reply that arrives twice runs the
attempt once, and a result the agent could not send before a graceful stop is sent by its next start."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.harness import wait_for
from tests.faults.conftest import MakeCluster
from tests.faults.harness import AgentProcess, mark, marks
from tests.faults.replay import ClaimReplayProxy

pytestmark = pytest.mark.slow


def test_a_claim_reply_delivered_twice_runs_the_attempt_once(
    backend: str, make_cluster: MakeCluster, tmp_path: Path
) -> None:
    cluster = make_cluster(backend)
    proxy = ClaimReplayProxy(cluster.a.url).start()
    try:
        agent = cluster.agent("twice", via=proxy.url)
        marker = tmp_path / "marker"
        done = cluster.a.run(agent_id="twice", type="shell", command=f"{mark(marker)}; echo ran; sleep 0.5")
        assert done["status"] == "success" and done["result"] == "ran\n", done
        assert proxy.replayed.is_set()  # the agent did get the same assignment a second time
        after = cluster.a.run(agent_id="twice", type="shell", command=f"{mark(marker)}; echo next")
        assert after["status"] == "success", after
    finally:
        proxy.close()
    assert [len(pids) for pids in marks(marker).values()] == [1, 1]
    assert "was started here before; it is never run twice" in agent.log()
    assert [ln["message"] for ln in cluster.a.logs(done["id"])] == ["ran"]


def test_a_result_not_sent_before_sigterm_is_sent_by_the_next_start(
    backend: str, make_cluster: MakeCluster, tmp_path: Path
) -> None:
    cluster = make_cluster(backend, lease_seconds=120, heartbeat_seconds=0.5)
    proxy = cluster.proxy()
    agent = cluster.agent("away", via=proxy.url, shutdown_grace_seconds="1")
    marker, go = tmp_path / "marker", tmp_path / "go"
    command = f"{mark(marker)}; echo one; while [ ! -e {go} ]; do sleep 0.05; done; echo two"
    task_id = cluster.a.create(agent_id="away", type="shell", command=command).json()["id"]
    wait_for(lambda: [ln["message"] for ln in cluster.a.logs(task_id)] == ["one"], 30, "the first line")
    proxy.pause("drop")  # the cloud is unreachable from now on
    go.touch()
    outbox = agent.data_dir / "outbox"

    def stored() -> bool:  # the result is the journal's last record
        return any(b'\n{"result":' in p.read_bytes() for p in outbox.glob("*.jsonl"))

    wait_for(stored, 30, "the result to reach the outbox")
    agent.stop(signal.SIGTERM)
    assert agent.proc is not None and agent.proc.returncode == 0, agent.log()[-2000:]
    assert "kept in the outbox for the next start" in agent.log()
    assert cluster.a.task(task_id)["status"] == "running"
    proxy.resume()
    agent.start().wait_registered()
    done = cluster.a.wait_final(task_id, 30)
    assert (done["status"], done["result"], done["attempts"]) == ("success", "one\ntwo\n", 1), done
    assert [ln["message"] for ln in cluster.a.logs(task_id)] == ["one", "two"]
    assert len(marks(marker)[task_id]) == 1
    # Delivered, so forgotten: only the lock and the ledger of started attempts remain.
    wait_for(lambda: sorted(p.name for p in outbox.iterdir()) == ["lock", "started"], 10, "the outbox to empty")


def test_a_second_agent_process_on_the_same_data_dir_refuses_to_start(make_cluster: MakeCluster) -> None:
    """It would take the first one's running attempts for a crashed life's and kill their processes."""
    cluster = make_cluster("sqlite")
    first = cluster.agent("shared")
    second = AgentProcess("shared", cluster.a.url, first.data_dir, 1, first.env).start()
    assert second.proc is not None and second.proc.wait(timeout=30) == 2
    assert first.proc is not None  # started by cluster.agent
    assert f"is in use by another agent process (pid {first.proc.pid})" in second.log()
    assert first.alive and cluster.a.run(agent_id="shared", type="shell", command="echo ok")["status"] == "success"
