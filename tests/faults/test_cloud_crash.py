"""SIGKILL of the cloud mid-task, then a restart on the same port: the running task completes, its log
is stored once and in order, its result once; a task accepted before the crash still runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import wait_for
from tests.faults.conftest import MakeCluster
from tests.faults.harness import mark, marks

pytestmark = pytest.mark.slow

LINES = 60


def test_cloud_killed_mid_task_loses_and_repeats_nothing(
    backend: str, make_cluster: MakeCluster, tmp_path: Path
) -> None:
    # The lease outlasts the outage: this test is about the cloud's restart, not the agent's.
    cluster = make_cluster(backend, process=True, lease_seconds=60)
    cloud = cluster.a
    cluster.agent("local", max_concurrency=1)
    marker = tmp_path / "marker"
    # ~3 s of output, a line every 50 ms: lines are in flight when the cloud dies and while it is away.
    command = f"{mark(marker)}; for i in $(seq 1 {LINES}); do echo line$i; sleep 0.05; done"
    running = cloud.create(type="shell", command=command, agent_id="local").json()["id"]
    queued = cloud.create(type="shell", command=f"{mark(marker)}; echo queued", agent_id="local").json()["id"]
    wait_for(lambda: len(cloud.logs(running)) >= 5, 30, "the first lines to be stored")
    cloud.kill()
    cloud.start()  # same port, same database: the agent's retries reach it again
    done = cloud.wait_final(running, 60)
    expected = [f"line{i}" for i in range(1, LINES + 1)]
    assert (done["status"], done["attempts"], done["error"]) == ("success", 1, ""), done
    assert done["result"] == "".join(f"{m}\n" for m in expected)
    log = cloud.logs(running)
    assert [ln["message"] for ln in log] == expected  # every line once, in order, nothing else
    assert [ln["seq"] for ln in log] == list(range(1, LINES + 1))
    after = cloud.wait_final(queued, 60)
    assert (after["status"], after["result"]) == ("success", "queued\n")
    runs = marks(marker)
    assert len(runs[running]) == 1 and len(runs[queued]) == 1
    # Stored once: the rows (runs of lines) of the one attempt hold each seq once.
    n = int(running.removeprefix("task-"))
    query = f"SELECT sum(lines), min(seq), max(seq + lines - 1), max(attempt) FROM task_logs WHERE task_id = {n}"
    assert cloud.sql(query) == [(LINES, 1, LINES, 1)]
