"""The agent channel spoken directly: a scripted agent's WebSocket against the real cloud (frames, errors,
auth before the upgrade, a revoked token, a piggybacked claim, a cancelled claim), and the agent's client
falling back to HTTP when the cloud refuses the upgrade."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from agent.client import CloudClient, CloudUnavailable
from tests.e2e.harness import AGENT, Cloud, wait_for


class Chan:
    """A scripted agent's channel: frames in, the answer to each request out."""

    def __init__(self, cloud: Cloud, agent_id: str, token: str) -> None:
        url = cloud.url.replace("http://", "ws://") + f"/api/v1/agents/{agent_id}/channel"
        headers = {"Authorization": f"Bearer {token}"}
        self.ws: ClientConnection = connect(url, additional_headers=headers, max_size=None, compression=None)
        self.ws.__enter__()  # websockets wants its connections entered; they are closed by the tests
        self.hello = orjson.loads(self.ws.recv(10))["hello"]
        self._ids = itertools.count(1)

    def send(self, op: str, body: dict[str, Any] | None = None, **extra: Any) -> int:
        rid = next(self._ids)
        self.ws.send(orjson.dumps({"id": rid, "op": op, "body": body or {}, **extra}))
        return rid

    def answer(self, rid: int, timeout: float = 30) -> dict[str, Any]:
        while True:
            reply = orjson.loads(self.ws.recv(timeout))
            if reply["id"] == rid:
                return dict(reply)

    def call(self, op: str, body: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        return self.answer(self.send(op, body, **extra))


def _token(client: httpx.Client) -> str:
    return str(client.headers["Authorization"]).removeprefix("Bearer ")


@pytest.fixture
def scripted(cloud: Cloud, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A registered scripted agent (HTTP client holding its own agent token), under an id of the test's own."""
    with contextlib.closing(cloud.scripted(f"ch-{request.node.name}", ["shell"])) as client:
        yield client


@pytest.fixture
def chan(cloud: Cloud, scripted: httpx.Client) -> Iterator[Chan]:
    c = Chan(cloud, scripted.headers["X-Agent-Id"], _token(scripted))
    yield c
    c.ws.close()


def _create(cloud: Cloud, agent_id: str, command: str = "echo hi") -> dict[str, Any]:
    r = cloud.create(agent_id=agent_id, type="shell", command=command)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_task_goes_claim_logs_result_over_the_channel(cloud: Cloud, scripted: httpx.Client, chan: Chan) -> None:
    """The whole attempt over one WebSocket; the result's piggybacked claim brings the next task."""
    agent_id = scripted.headers["X-Agent-Id"]
    waiting = chan.send("claim", {"capacity": 1, "wait_s": 30})
    first, second = _create(cloud, agent_id), _create(cloud, agent_id, "echo two")
    [assigned] = chan.answer(waiting)["ok"]
    assert assigned["id"] == first["id"] and cloud.task(first["id"])["status"] == "running"
    beat = chan.call("heartbeat", {"running": [first["id"]], "tokens": {first["id"]: assigned["task_token"]}})
    assert beat["ok"]["cancel"] == []
    token = assigned["task_token"]
    lines = [{"seq": 1, "stream": "stdout", "message": "hi"}]
    assert chan.call("logs", {"task_token": token, "lines": lines}, task_id=first["id"]) == {
        "id": 3,
        "ok": {"next_seq": 2},
    }
    report = {"task_token": token, "status": "success", "exit_code": 0, "result": "hi\n", "log_lines": 1}
    done = chan.call("result", report, task_id=first["id"], claim=1)["ok"]
    assert done["status"] == "success"
    assert [a["id"] for a in done["assignments"]] == [second["id"]]
    assert cloud.task(second["id"])["status"] == "running"
    assert [line["message"] for line in cloud.logs(first["id"]) if line["stream"] == "stdout"] == ["hi"]


def test_errors_come_back_as_over_http(cloud: Cloud, scripted: httpx.Client, chan: Chan) -> None:
    """A log gap is 409 with next_seq, a stale token 409, another agent's task 403, as the HTTP routes say."""
    agent_id = scripted.headers["X-Agent-Id"]
    task = _create(cloud, agent_id)
    [assigned] = chan.call("claim", {"capacity": 1, "wait_s": 5})["ok"]
    gap = [{"seq": 3, "stream": "stdout", "message": "x"}]
    refused = chan.call("logs", {"task_token": assigned["task_token"], "lines": gap}, task_id=task["id"])
    assert refused["status"] == 409 and refused["next_seq"] == 1, refused
    stale = chan.call("logs", {"task_token": "0" * 32, "lines": []}, task_id=task["id"])
    assert stale["status"] == 409 and "task_token" in stale["error"]
    other = cloud.create(agent_id="local", type="shell", command="sleep 5").json()
    foreign = chan.call("logs", {"task_token": "0" * 32, "lines": []}, task_id=other["id"])
    assert foreign["status"] == 403 and "belongs to agent 'local'" in foreign["error"]


def test_malformed_frames_get_an_error_frame_and_the_channel_goes_on(chan: Chan) -> None:
    chan.ws.send(b'{"id": 41, "op": "claim", "body": {')
    broken = chan.answer(41)  # answered to the request whose id starts the frame
    assert broken["status"] == 400 and "invalid JSON" in broken["error"], broken
    unknown = chan.call("launch", {})
    assert unknown["status"] == 400 and unknown["error"].startswith("op:"), unknown
    bad_body = chan.call("claim", {"capacity": 0})
    assert bad_body["status"] == 400 and bad_body["error"].startswith("capacity:"), bad_body
    extra = chan.call("heartbeat", {}, colour="red")
    assert extra == {"id": extra["id"], "status": 400, "error": "colour: unknown field"}
    no_task = chan.call("logs", {"task_token": "t", "lines": []})
    assert no_task["status"] == 400 and no_task["error"].startswith("task_id:"), no_task
    chan.ws.send(b"[1, 2")
    nameless = orjson.loads(chan.ws.recv(10))
    assert nameless["id"] is None and nameless["status"] == 400 and "invalid JSON" in nameless["error"]
    assert chan.call("heartbeat", {})["ok"]["cancel"] == []  # still served


def test_a_frame_over_the_limit_is_refused_with_413(make_cloud: Any) -> None:
    cloud = make_cloud(max_agent_request_bytes=4096)
    with contextlib.closing(cloud.scripted("ch-limit", ["shell"])) as client:
        chan = Chan(cloud, "ch-limit", _token(client))
        assert chan.hello == {"max_frame_bytes": 4096, "ping_seconds": 30.0}
        big = chan.call("heartbeat", {"running": ["task-1"] * 600})
        assert big["status"] == 413 and "4096-byte limit" in big["error"], big
        assert chan.call("heartbeat", {})["ok"]["cancel"] == []
        chan.ws.close()


def _refusal(cloud: Cloud, agent_id: str, token: str | None) -> tuple[int, str]:
    url = cloud.url.replace("http://", "ws://") + f"/api/v1/agents/{agent_id}/channel"
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with pytest.raises(InvalidStatus) as refused, connect(url, additional_headers=headers):
        pass
    response = refused.value.response
    return response.status_code, orjson.loads(response.body or b"{}").get("error", "")


def test_the_upgrade_is_refused_before_accepting_a_wrong_token(cloud: Cloud, scripted: httpx.Client) -> None:
    agent_id = scripted.headers["X-Agent-Id"]
    assert _refusal(cloud, agent_id, None) == (401, "missing bearer token (Authorization: Bearer <token>)")
    assert _refusal(cloud, agent_id, "tga_not-a-token")[0] == 401
    status, error = _refusal(cloud, agent_id, AGENT)  # the registration token
    assert status == 403 and "agent token" in error
    status, error = _refusal(cloud, "local", _token(scripted))  # another agent's id
    assert status == 403 and f"belongs to agent {agent_id!r}" in error


def test_revoking_the_token_closes_an_idle_channel_that_sends_nothing(cloud: Cloud) -> None:
    """An idle agent sends nothing on its channel; revoking its token (or deleting the agent) still
    closes the channel at once, so the agent does not look online on a token that no longer works."""
    agent_id = "ch-revoked-idle"
    r = cloud.http.post(f"/api/v1/agents/{agent_id}/tokens", json={"name": "to revoke"})
    assert r.status_code == 201, r.text
    with contextlib.closing(cloud.scripted(agent_id, ["shell"])):
        chan = Chan(cloud, agent_id, r.json()["token"])
        assert cloud.http.delete(f"/api/v1/tokens/{r.json()['id']}").status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            chan.ws.recv(10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_an_idle_channel_is_closed_when_its_token_expires(cloud: Cloud) -> None:
    """The token is checked again at its expiry, though the idle agent sends nothing: its channel does not
    keep it looking online on a token that stopped working."""
    from sqlalchemy import create_engine, text

    agent_id = "ch-expiring-idle"
    r = cloud.http.post(f"/api/v1/agents/{agent_id}/tokens", json={"name": "to expire", "expires_in": 60})
    assert r.status_code == 201, r.text
    # The API's shortest expiry is a minute: the test brings it forward, as the clock would.
    expires = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=2)
    engine = create_engine(cloud.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE credentials SET expires_at = :at WHERE id = :id"),
                {"at": str(expires), "id": r.json()["id"]},
            )
    finally:
        engine.dispose()
    with contextlib.closing(cloud.scripted(agent_id, ["shell"])):
        chan = Chan(cloud, agent_id, r.json()["token"])
        with pytest.raises(ConnectionClosed) as closed:
            chan.ws.recv(30)
        closed_at = datetime.now(UTC).replace(tzinfo=None)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert "expired" in closed.value.rcvd.reason
        assert closed_at >= expires  # not before its time


def test_a_cancelled_claim_hands_out_nothing(cloud: Cloud, scripted: httpx.Client, chan: Chan) -> None:
    """An agent that stops waiting for its claim (it is stopping) sends `cancel`: a task created then
    stays pending for the next claim instead of going to a request no one reads."""
    agent_id = scripted.headers["X-Agent-Id"]
    abandoned = chan.send("claim", {"capacity": 1, "wait_s": 30})
    chan.send("cancel", {"request": abandoned})
    assert chan.call("heartbeat", {})["ok"]["cancel"] == []  # frames are handled in order: the cancel is done
    task = _create(cloud, agent_id)
    [assigned] = chan.call("claim", {"capacity": 1, "wait_s": 5})["ok"]
    assert assigned["id"] == task["id"]


def _status(cloud: Cloud, agent_id: str) -> str:
    r = cloud.http.get(f"/api/v1/agents/{agent_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def test_an_idle_agent_with_an_open_channel_is_online_without_heartbeats(make_cloud: Any) -> None:
    """The open channel is the sighting: an agent that sends nothing on it stays online, one with no
    channel (registered after it) goes offline, and once the channel closes the first goes offline too."""
    cloud = make_cloud(agent_offline_seconds=3)
    with contextlib.closing(cloud.scripted("ch-idle", ["shell"])) as idle:
        chan = Chan(cloud, "ch-idle", _token(idle))
        with contextlib.closing(cloud.scripted("ch-none", ["shell"])):
            wait_for(lambda: _status(cloud, "ch-none") == "offline", 30, "the agent without a channel offline")
        # Registered before ch-none, so its registration alone would have made it offline by now.
        assert _status(cloud, "ch-idle") == "online"
        chan.ws.close()
        wait_for(lambda: _status(cloud, "ch-idle") == "offline", 30, "the agent offline once its channel closed")


def test_a_claim_on_the_channel_may_wait_longer_than_an_http_claim(make_cloud: Any) -> None:
    """claim_wait_max_seconds caps HTTP long-polls (proxies' idle timeouts); a claim on the open channel
    is capped by channel_claim_wait_max_seconds instead, so an idle agent renews it seldom."""
    cloud = make_cloud(claim_wait_max_seconds=1, channel_claim_wait_max_seconds=60)
    with contextlib.closing(cloud.scripted("ch-long", ["shell"])) as scripted:
        chan = Chan(cloud, "ch-long", _token(scripted))
        waiting = chan.send("claim", {"capacity": 1, "wait_s": 30})
        with pytest.raises(TimeoutError):
            chan.ws.recv(3)  # three times the HTTP cap, and still waiting
        task = _create(cloud, "ch-long")
        [assigned] = chan.answer(waiting)["ok"]
        assert assigned["id"] == task["id"]
        chan.ws.close()


def test_a_channel_at_its_in_flight_limit_reads_no_more_frames_until_one_ends(make_cloud: Any) -> None:
    """channel_max_in_flight bounds what one agent token makes the cloud hold: past it the cloud stops
    reading (backpressure), and goes on as soon as a request ends."""
    cloud = make_cloud(channel_max_in_flight=2)
    with contextlib.closing(cloud.scripted("ch-busy", ["shell"])) as scripted:
        chan = Chan(cloud, "ch-busy", _token(scripted))
        first = chan.send("claim", {"capacity": 1, "wait_s": 30})
        chan.send("claim", {"capacity": 1, "wait_s": 30})
        beat = chan.send("heartbeat", {})
        with pytest.raises(TimeoutError):
            chan.ws.recv(2)  # two claims wait: the heartbeat is not even read
        task = _create(cloud, "ch-busy")
        answers = [orjson.loads(chan.ws.recv(30)) for _ in range(2)]
        by_id = {a["id"]: a for a in answers}
        assert [t["id"] for t in by_id[first]["ok"]] == [task["id"]], answers
        assert by_id[beat]["ok"]["cancel"] == [], answers  # read once the first claim ended
        chan.ws.close()


def test_the_client_falls_back_to_http_when_the_upgrade_is_refused(make_cloud: Any) -> None:
    cloud = make_cloud(channel_enabled="false")
    with contextlib.closing(cloud.scripted("ch-off", ["shell"])) as scripted:
        token = _token(scripted)
    task = _create(cloud, "ch-off")

    async def claim(mode: str) -> tuple[list[str], str]:
        client = CloudClient(cloud.url, token, "ch-off", mode)  # type: ignore[arg-type]
        try:
            return [a.id for a in await client.claim(1, 0)], client.transport
        finally:
            await client.aclose()

    with pytest.raises(CloudUnavailable, match="channel refused: 404"):
        asyncio.run(claim("websocket"))
    assert asyncio.run(claim("auto")) == ([task["id"]], "http")
