"""The agent channel under faults, with real agent processes: a channel dropped while its claim's answer
is on the way loses no task; piggybacked claims never run more tasks than the agent's max_concurrency;
a task created on replica A reaches, over the channel, an agent connected to replica B."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.harness import peak, wait_for
from tests.faults.conftest import MakeCluster

CLAIM_MAX_S = 0.5
"""A claim on B woken by A's NOTIFY (tests/faults/test_replicas.py measures ~10-30 ms); a re-read would take 120 s."""


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_a_channel_dropped_with_a_claim_answer_on_the_way_loses_no_task(
    make_cluster: MakeCluster, backend: str
) -> None:
    """The claim's answer is held in the network, then the connection drops: the task was handed to a
    channel that is gone. Its lease runs out, it is retried, and the agent, on a new channel, runs it."""
    cluster = make_cluster(backend, lease_seconds=3, heartbeat_seconds=1)
    proxy = cluster.proxy()
    agent = cluster.agent("ch-drop", via=proxy.url, max_concurrency=1, agent_channel="websocket")
    wait_for(lambda: "agent channel open" in agent.log(), 30, "the agent's channel")
    # Only answers are held: the agent's claim reaches the cloud whether or not it had left before the pause.
    proxy.pause("hold_answers")
    body = {"agent_id": "ch-drop", "type": "shell", "command": "echo hi", "max_retries": 1, "retry_backoff": 0}
    task = cluster.a.create(**body).json()
    wait_for(lambda: cluster.a.task(task["id"])["status"] == "running", 30, "the task handed out")
    proxy.pause("drop")
    proxy.resume()
    done = cluster.a.wait_final(task["id"], 60)
    assert done["status"] == "success" and done["attempts"] == 2, done
    assert agent.log().count("agent channel open") >= 2  # it came back on a new channel


def test_an_agent_drops_a_channel_on_which_nothing_arrives(make_cluster: MakeCluster) -> None:
    """The cloud pings every channel_ping_seconds; an agent that hears nothing, not even a ping, for three
    of them drops the link (an idle agent sends nothing that would time out) and opens another."""
    cluster = make_cluster("sqlite", channel_ping_seconds=0.5)
    proxy = cluster.proxy()
    agent = cluster.agent("ch-silent", via=proxy.url, max_concurrency=1, agent_channel="websocket")
    wait_for(lambda: "agent channel open" in agent.log(), 30, "the agent's channel")
    proxy.pause("hold")
    wait_for(lambda: "agent channel dropped: nothing from the cloud for 1.5 s" in agent.log(), 30, "the drop")
    proxy.resume()
    wait_for(lambda: agent.log().count("agent channel open") >= 2, 30, "a new channel")
    done = cluster.a.create(agent_id="ch-silent", type="shell", command="echo hi", sync=True, timeout=30).json()
    assert done["status"] == "success", done


def test_deleting_an_agent_on_a_closes_its_idle_channel_on_b(make_cluster: MakeCluster) -> None:
    """The revocation reaches the other replica through NOTIFY: B forgets its cached token and closes the
    channel of the deleted agent. The channel here is scripted and sends nothing at all (no heartbeat that
    B could check), as an idle agent's does."""
    cluster = make_cluster("postgres", replicas=2)
    headers = {"Authorization": f"Bearer {cluster.a.agent_token('ch-gone')}"}
    r = httpx.post(f"{cluster.b.url}/api/v1/agents/register", json={"agent_id": "ch-gone"}, headers=headers)
    assert r.status_code == 200, r.text
    url = cluster.b.url.replace("http://", "ws://") + "/api/v1/agents/ch-gone/channel"
    with connect(url, additional_headers=headers) as ws:
        assert "hello" in orjson.loads(ws.recv(10))
        assert cluster.a.http.delete("/api/v1/agents/ch-gone").status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


@pytest.mark.parametrize("transport", ["http", "websocket"])
def test_piggybacked_claims_never_run_more_than_max_concurrency(
    make_cluster: MakeCluster, tmp_path: Path, transport: str
) -> None:
    """Each result brings the agent's next task, saving its claim; the tasks running at once (as the
    commands themselves record it) never exceed the agent's 2 slots."""
    cluster = make_cluster("sqlite")
    proxy = cluster.proxy(record=True)
    cluster.agent("ch-busy", via=proxy.url, max_concurrency=2, agent_channel=transport)
    marker = tmp_path / "runs"
    command = f'echo "start $(date +%s%N)" >> {marker}; sleep 0.2; echo "end $(date +%s%N)" >> {marker}'
    ids = [cluster.a.create(agent_id="ch-busy", type="shell", command=command).json()["id"] for _ in range(12)]
    for task_id in ids:
        assert cluster.a.wait_final(task_id, 60)["status"] == "success"
    events = []
    for line in marker.read_text().split("\n"):
        if line:
            kind, stamp = line.split()
            events.append((int(stamp), -1 if kind == "end" else 1))
    assert peak(events) == 2, events
    if transport == "http":  # on the channel the requests are inside WebSocket frames
        sent = proxy.sent()
        claims, piggybacked = sent.count(b"POST /api/v1/agents/ch-busy/claim "), sent.count(b"\r\nTiangong-Claim: ")
        assert piggybacked >= 8 and claims <= 6, (claims, piggybacked)


@pytest.mark.slow
def test_a_task_created_on_a_reaches_its_agent_on_b_over_the_channel(make_cluster: MakeCluster) -> None:
    """recheck_seconds and idle_recheck_seconds are far above the bound: only A's NOTIFY can wake B's channel."""
    cluster = make_cluster("postgres", replicas=2, recheck_seconds=120, idle_recheck_seconds=120)
    agent = cluster.agent("ch-on-b", via=cluster.b.url, max_concurrency=1, agent_channel="websocket")
    wait_for(lambda: "agent channel open" in agent.log(), 30, "the agent's channel to B")
    for _ in range(3):
        r = cluster.a.create(agent_id="ch-on-b", type="shell", command="echo hi", sync=True, timeout=30)
        task = r.json()
        assert r.status_code == 201 and task["status"] == "success" and not task["sync_timed_out"], task
        assert _at(task["started_at"]) - _at(task["created_at"]) < CLAIM_MAX_S, task


def test_an_idle_http_agent_sends_no_heartbeats_and_stays_online(make_cluster: MakeCluster) -> None:
    """On the HTTP fallback the claim in flight is the sighting, as the open channel is: an idle agent (no
    task) sends claims only, the cloud shows it online past agent_offline_seconds, and a task still runs."""
    cluster = make_cluster("sqlite", agent_offline_seconds=3, heartbeat_seconds=0.5, claim_wait_max_seconds=2)
    proxy = cluster.proxy(record=True)
    cluster.agent("http-idle", via=proxy.url, max_concurrency=1, agent_channel="http")
    started = len(proxy.sent())
    # Idle for three offline periods: it would have beaten every second (twice heartbeat_seconds).
    wait_for(lambda: proxy.sent()[started:].count(b"/claim ") >= 4, 30, "claims renewed past their 2 s cap")
    idle = proxy.sent()[started:]
    assert b"/heartbeat " not in idle
    assert cluster.a.http.get("/api/v1/agents/http-idle").json()["status"] == "online"
    done = cluster.a.create(agent_id="http-idle", type="shell", command="echo hi", sync=True, timeout=30).json()
    assert done["status"] == "success", done
