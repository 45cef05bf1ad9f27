"""Network partitions between an agent and the cloud (a proxy paused): shorter than the lease nothing
happens twice; longer than the lease the task is retried elsewhere and the old agent is fenced off."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.harness import wait_for
from tests.faults.conftest import MakeCluster
from tests.faults.harness import Replica, mark, marks, pid_running
from tests.faults.proxy import Mode, TcpProxy
from wire.tasks import is_lost

pytestmark = pytest.mark.slow

LEASE = 4.0
SHORT = 1.5
"""The short partition; with heartbeats every 0.5 s it leaves the lease a margin of about 2 s."""


def stdout(cloud: Replica, task_id: str) -> list[str]:
    return [ln["message"] for ln in cloud.logs(task_id) if ln["stream"] == "stdout"]


@pytest.mark.parametrize("mode", ["hold", "drop"])
def test_partition_shorter_than_the_lease_changes_nothing(
    backend: str, mode: Mode, make_cluster: MakeCluster, tmp_path: Path
) -> None:
    cluster = make_cluster(backend, lease_seconds=LEASE, heartbeat_seconds=0.5, reaper_interval_seconds=0.2)
    proxy = cluster.proxy()
    cluster.agent("cut", via=proxy.url, max_concurrency=1)
    marker, go = tmp_path / "marker", tmp_path / "go"
    command = f"{mark(marker)}; echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo after"
    task_id = cluster.a.create(agent_id="cut", type="shell", command=command, max_retries=2).json()["id"]
    wait_for(lambda: stdout(cluster.a, task_id) == ["before"], 30, "the first line")
    proxy.pause(mode)
    go.touch()  # the task ends during the partition: its last line and result wait for the network
    time.sleep(SHORT)  # the partition itself
    proxy.resume()
    done = cluster.a.wait_final(task_id, 60)
    assert (done["status"], done["attempts"], done["retries"], done["last_error"]) == ("success", 1, 0, ""), done
    assert done["result"] == "before\nafter\n"
    assert [ln["message"] for ln in cluster.a.logs(task_id)] == ["before", "after"]
    assert len(marks(marker)[task_id]) == 1


def _task_requests(proxy: TcpProxy, task_id: str, since: int) -> int:
    """Requests the agent made about this task (log batches, results) after byte `since` of its traffic."""
    return len(re.findall(rf"POST /api/v1/agent/tasks/{task_id}/(?:logs|result) ".encode(), proxy.sent()[since:]))


def _stale_answers(proxy: TcpProxy, task_id: str, since: int) -> int:
    return proxy.received()[since:].count(f"stale or unknown token for {task_id}".encode())


@pytest.mark.parametrize("mode", ["hold", "drop"])
def test_partition_longer_than_the_lease_retries_and_fences_the_old_agent(
    backend: str, mode: Mode, make_cluster: MakeCluster, tmp_path: Path
) -> None:
    cluster = make_cluster(backend, lease_seconds=3, heartbeat_seconds=0.5, reaper_interval_seconds=0.2)
    proxy = cluster.proxy(record=True)
    # Concurrency 1: while its task runs the old agent has no claim in flight that could take the retry.
    # Long-poll HTTP: the test reads the agent's requests in the proxy (WebSocket frames are masked).
    cluster.agent("pool", via=proxy.url, max_concurrency=1, agent_channel="http")
    marker, first, go = tmp_path / "marker", tmp_path / "first", tmp_path / "go"
    # The first run waits for `go`; a later one (mkdir fails: `first` exists) goes straight through.
    wait = f"if mkdir {first} 2>/dev/null; then while [ ! -e {go} ]; do sleep 0.05; done; fi"
    command = f'{mark(marker)}; echo "begin $$"; {wait}; echo "end $$"'
    created = cluster.a.create(agent_id="pool", type="shell", command=command, max_retries=1, retry_backoff=0.1)
    task_id = created.json()["id"]
    wait_for(lambda: len(stdout(cluster.a, task_id)) == 1, 30, "the first run's first line")
    [old_pid] = marks(marker)[task_id]
    proxy.pause(mode)
    sent_mark, received_mark = len(proxy.sent()), len(proxy.received())
    # Another process of the same agent id, straight to the cloud, takes the retry once the lease is out.
    cluster.agent("pool", max_concurrency=1)
    done = cluster.a.wait_final(task_id, 60)
    assert (done["status"], done["attempts"], done["retries"]) == ("success", 2, 1), done
    assert is_lost(done["last_error"])
    [_, new_pid] = marks(marker)[task_id]
    assert done["result"] == f"begin {new_pid}\nend {new_pid}\n"
    # The old run ends now, cut off: its last line and result reach the cloud late and are refused.
    go.touch()
    wait_for(lambda: not pid_running(old_pid), 30, "the old run to end")
    proxy.resume()
    _wait_refused(proxy, task_id, sent_mark, received_mark)
    after = cluster.a.task(task_id)
    assert (after["status"], after["result"], after["attempts"]) == ("success", done["result"], 2)
    messages = stdout(cluster.a, task_id)
    assert messages == [f"begin {old_pid}", f"begin {new_pid}", f"end {new_pid}"]


def test_partition_longer_than_the_lease_without_retries_refuses_the_late_failure(
    backend: str, make_cluster: MakeCluster, tmp_path: Path
) -> None:
    """No retry left: the reaper fails the task `agent lost`; the old run's late `failed` result (the same
    status) must still get 409, not pass for a resend of a result the cloud already has."""
    cluster = make_cluster(backend, lease_seconds=3, heartbeat_seconds=0.5, reaper_interval_seconds=0.2)
    proxy = cluster.proxy(record=True)
    # Long-poll HTTP: the test reads the agent's requests in the proxy (WebSocket frames are masked).
    cluster.agent("cut", via=proxy.url, max_concurrency=1, agent_channel="http")
    go = tmp_path / "go"
    command = f'echo "begin $$"; while [ ! -e {go} ]; do sleep 0.05; done; echo "end $$"; exit 3'
    task_id = cluster.a.create(agent_id="cut", type="shell", command=command).json()["id"]
    wait_for(lambda: len(stdout(cluster.a, task_id)) == 1, 30, "the first line")
    pid = int(stdout(cluster.a, task_id)[0].split()[1])
    proxy.pause("hold")
    sent_mark, received_mark = len(proxy.sent()), len(proxy.received())
    done = cluster.a.wait_final(task_id, 60)
    assert (done["status"], done["error"], done["attempts"], done["retries"]) == ("failed", "agent lost", 1, 0), done
    go.touch()  # the old run fails now, cut off: its result is `failed` too, and late
    wait_for(lambda: not pid_running(pid), 30, "the old run to end")
    proxy.resume()
    _wait_refused(proxy, task_id, sent_mark, received_mark)
    after = cluster.a.task(task_id)
    assert (after["status"], after["error"], after["exit_code"], after["result"]) == ("failed", "agent lost", None, "")
    assert stdout(cluster.a, task_id) == [f"begin {pid}"]


def _wait_refused(proxy: TcpProxy, task_id: str, sent_mark: int, received_mark: int) -> None:
    """Wait until the old agent has sent its result and every request it made about the task since the
    marks (late log batches, the result) got 409."""

    def refused() -> bool:
        asked = _task_requests(proxy, task_id, sent_mark)
        results = proxy.sent()[sent_mark:].count(f"/api/v1/agent/tasks/{task_id}/result ".encode())
        return results >= 1 and _stale_answers(proxy, task_id, received_mark) == asked

    wait_for(refused, 60, "the old agent's late log and result to be refused")
