"""The agent's health files, which its Kubernetes probes read: `alive` stays fresh while its loops turn,
cloud or no cloud; `ready` exists from registration until draining starts."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.harness import Cloud, cloud_env, wait_for


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def test_ready_after_register_gone_on_drain_and_alive_kept_fresh(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path / "cloud", cloud_env(TIANGONG_HEARTBEAT_SECONDS="1")).start()
    try:
        cloud.stop()  # the agent starts while its cloud is down
        data_dir = cloud.data_dir / "agent-local-0"  # where the harness puts the first agent's data
        data_dir.mkdir(parents=True)
        alive, ready = data_dir / "alive", data_dir / "ready"
        ready.touch()  # left by a process that was killed: stale
        agent = cloud.agent("local", wait_online=False)

        first = wait_for(lambda: mtime(alive), 30, "alive to be written")
        assert not ready.exists()
        # Registration keeps being retried, and each attempt shows the agent is alive: no restart by the
        # liveness probe just because the cloud is out of reach.
        wait_for(lambda: mtime(alive) > first, 30, "alive to be touched again while the cloud is down")
        assert not ready.exists() and agent.proc.poll() is None

        cloud.start()
        wait_for(ready.exists, 60, "ready after registering")
        assert cloud.http.get("/api/v1/agents/local").json()["status"] == "online"
        beat = mtime(alive)
        wait_for(lambda: mtime(alive) > beat, 10, "alive to be touched by the heartbeat loop")

        task = cloud.create(type="shell", command="sleep 3; echo drained", timeout=60).json()
        wait_for(lambda: cloud.task(task["id"])["status"] == "running", 30, "the task to start")
        agent.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not ready.exists(), 10, "ready to go when draining starts")
        assert agent.proc.poll() is None  # still draining: not ready, yet alive
        draining = mtime(alive)
        wait_for(lambda: mtime(alive) > draining, 10, "alive to be touched while draining")
        assert agent.proc.wait(timeout=60) == 0
        assert not ready.exists()
        assert cloud.wait_final(task["id"])["result"] == "drained\n"
    finally:
        cloud.close()
