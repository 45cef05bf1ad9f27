"""The agent protocol spoken directly: a scripted agent against the real cloud, no agent process."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests.e2e.harness import AGENT, Cloud, wait_for


@pytest.fixture
def agent(cloud: Cloud, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """An HTTP client holding the agent token, registered under an id of the test's own."""
    with contextlib.closing(cloud.scripted(f"scripted-{request.node.name}", ["shell", "execute"])) as client:
        yield client


def _claim(agent: httpx.Client, capacity: int = 1, wait_s: float = 0) -> list[dict[str, Any]]:
    r = agent.post(f"/api/v1/agents/{agent.headers['X-Agent-Id']}/claim", json={"capacity": capacity, "wait_s": wait_s})
    assert r.status_code == 200, r.text
    return list(r.json())


def _create(cloud: Cloud, agent: httpx.Client, command: str = "echo hi") -> dict[str, Any]:
    r = cloud.create(agent_id=agent.headers["X-Agent-Id"], type="shell", command=command)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _line(seq: int, message: str, stream: str = "stdout") -> dict[str, Any]:
    return {"seq": seq, "stream": stream, "message": message}


def test_claim_hands_out_the_task_with_secrets_and_a_token(cloud: Cloud, agent: httpx.Client) -> None:
    r = cloud.create(
        agent_id=agent.headers["X-Agent-Id"],
        type="shell",
        command="echo",
        params={"password": "pw"},
        env={"TOKEN": "t"},
    )
    task = r.json()
    assert task["params"]["password"] == "******"
    [assigned] = _claim(agent)
    assert assigned["id"] == task["id"]
    assert assigned["params"]["password"] == "pw" and assigned["env"]["TOKEN"] == "t"
    assert assigned["attempt"] == 1 and len(assigned["task_token"]) >= 32
    assert cloud.task(task["id"])["status"] == "running"
    assert _claim(agent) == []  # handed out once


def test_claim_long_poll_wakes_on_create_and_times_out_empty(cloud: Cloud, agent: httpx.Client) -> None:
    assert _claim(agent, wait_s=0.2) == []
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_claim, agent, 1, 30)
        created = _create(cloud, agent)
        # The claim answers with the new task, long before its 30 s wait would have run out.
        got = waiting.result(timeout=10)
    assert [t["id"] for t in got] == [created["id"]]


def test_an_idle_http_agents_claims_read_nothing_yet_miss_no_task(cloud: Cloud, agent: httpx.Client) -> None:
    """An idle agent's claims are separate requests, every wait_s: once one found the queue empty, the next
    ones do not read it again until a task is created, and one created while no claim was in flight is
    handed to the next claim."""
    agent_id = agent.headers["X-Agent-Id"]
    assert _claim(agent) == []
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if agent_id in str(parameters):
            statements.append(statement)

    assert cloud.thread is not None  # the cloud runs in this process
    engine = cast(FastAPI, cloud.thread.server.config.app).state.ctx.db.engine  # create_app's
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(3):
            assert _claim(agent) == []
        assert statements == []  # nothing read for the agent: its queue was known to be empty
        created = _create(cloud, agent)  # no claim in flight now
        statements.clear()
        got = _claim(agent)
        assert any("tasks" in s for s in statements)  # the next claim read, and found it
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [t["id"] for t in got] == [created["id"]]


@contextlib.contextmanager
def _engine_events(cloud: Cloud, name: str, listener: Any) -> Iterator[None]:
    """`listener` on the in-process cloud's engine for the block."""
    assert cloud.thread is not None  # the cloud runs in this process
    engine = cast(FastAPI, cloud.thread.server.config.app).state.ctx.db.engine  # create_app's
    event.listen(engine, name, listener)
    try:
        yield
    finally:
        event.remove(engine, name, listener)


def _waiting_claim(cloud: Cloud, agent: httpx.Client, pool: ThreadPoolExecutor) -> Any:
    """A claim of `agent` (a fresh one: its first claim reads the queue) sent and waiting after its read."""
    agent_id, claimed, read = agent.headers["X-Agent-Id"], threading.Event(), threading.Event()

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if agent_id in str(parameters) and "tasks" in statement:
            claimed.set()

    def committed(_conn: Any) -> None:
        if claimed.is_set():
            read.set()  # its read found nothing: it waits from the end of that transaction on

    with _engine_events(cloud, "before_cursor_execute", seen), _engine_events(cloud, "commit", committed):
        waiting = pool.submit(agent.post, f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 30})
        assert read.wait(10), "the claim did not read the queue"
    return waiting


def test_a_task_created_while_its_agents_claim_waits_reaches_it_in_the_creates_own_commit(
    cloud: Cloud, agent: httpx.Client
) -> None:
    """A create on the replica where the agent's claim waits claims the task for it in the same transaction:
    one commit, not the create's and then the woken claim's (the sync round trip's critical path). That
    claim was a read: the agent's next claim does not read the queue again, and still misses no task. The
    create answers the task as it is: already running."""
    agent_id, commits, statements, ours = agent.headers["X-Agent-Id"], [], [], threading.Event()

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if agent_id in str(parameters):
            statements.append(statement)

    def touched(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if agent_id in str(parameters) and "tasks" in statement:
            ours.set()  # a statement on this agent's tasks (not a background pass's, nor the sightings')

    def committed(_conn: Any) -> None:
        if ours.is_set():
            commits.append(1)
            ours.clear()

    with ThreadPoolExecutor(1) as pool:
        waiting = _waiting_claim(cloud, agent, pool)
        with _engine_events(cloud, "before_cursor_execute", touched), _engine_events(cloud, "commit", committed):
            created = _create(cloud, agent)
            r = waiting.result(timeout=10)
    assert r.status_code == 200 and [t["id"] for t in r.json()] == [created["id"]], r.text
    assert len(commits) == 1
    assert created["status"] == "running" and created["started_at"] is not None
    assert cloud.task(created["id"])["status"] == "running"
    with _engine_events(cloud, "before_cursor_execute", seen):
        assert _claim(agent) == []  # handed out once
    assert statements == []  # the create's claim found no other task: nothing to read
    later = _create(cloud, agent)  # no claim in flight now
    assert later["status"] == "pending"
    assert [t["id"] for t in _claim(agent)] == [later["id"]]


def test_a_claim_waiting_when_its_token_is_revoked_is_handed_nothing(cloud: Cloud) -> None:
    """A create does not hand its task to a waiting claim whose token was revoked meanwhile: the claim is
    refused (401) and the task stays pending for a claim with a valid token."""
    agent_id = "revoked-while-waiting"
    r = cloud.http.post(f"/api/v1/agents/{agent_id}/tokens", json={"name": "to revoke"})
    assert r.status_code == 201, r.text
    revoked = r.json()
    with contextlib.closing(cloud.scripted(agent_id, ["shell"])) as agent:
        doomed = httpx.Client(base_url=cloud.url, headers={"Authorization": f"Bearer {revoked['token']}"}, timeout=60)
        doomed.headers["X-Agent-Id"] = agent_id
        with contextlib.closing(doomed), ThreadPoolExecutor(1) as pool:
            waiting = _waiting_claim(cloud, doomed, pool)
            assert cloud.http.delete(f"/api/v1/tokens/{revoked['id']}").status_code == 204
            created = _create(cloud, agent)
            refused = waiting.result(timeout=10)
        assert refused.status_code == 401, refused.text
        assert cloud.task(created["id"])["status"] == "pending"
        assert [t["id"] for t in _claim(agent)] == [created["id"]]


def test_a_create_does_not_wait_on_the_check_of_the_waiting_claims_token(make_cloud: Any) -> None:
    """The waiting claim's token is checked before the create's transaction: a check that writes (a token's
    last use, recorded at most once a minute) inside it would wait on that transaction's own lock on SQLite,
    stalling the cloud for the 30 s of SQLite's busy timeout."""
    from sqlalchemy import create_engine, text

    cloud = make_cloud(token_cache_seconds=0)  # every use of a token looks it up
    with contextlib.closing(cloud.scripted("lock-check", ["shell"])) as agent, ThreadPoolExecutor(1) as pool:
        waiting = _waiting_claim(cloud, agent, pool)
        engine = create_engine(cloud.database_url)
        try:
            with engine.begin() as conn:  # last used long ago: the next check records its use
                conn.execute(text("UPDATE credentials SET last_used_at = :at"), {"at": str(datetime(2000, 1, 1))})
        finally:
            engine.dispose()
        r = cloud.http.post(
            "/api/v1/tasks", json={"agent_id": "lock-check", "type": "shell", "command": "echo hi"}, timeout=5
        )
        assert r.status_code == 201, r.text
        claimed = waiting.result(timeout=10)
    assert claimed.status_code == 200 and [t["id"] for t in claimed.json()] == [r.json()["id"]], claimed.text


def test_log_seq_repeat_ignored_gap_refused(cloud: Cloud, agent: httpx.Client) -> None:
    created = _create(cloud, agent)
    [a] = _claim(agent)
    url, token = f"/api/v1/agent/tasks/{a['id']}/logs", a["task_token"]
    r = agent.post(url, json={"task_token": token, "lines": [_line(1, "one"), _line(2, "two")]})
    assert r.status_code == 200 and r.json() == {"next_seq": 3}
    r = agent.post(url, json={"task_token": token, "lines": [_line(2, "two"), _line(3, "three")]})
    assert r.status_code == 200 and r.json() == {"next_seq": 4}  # seq 2 was a repeat
    r = agent.post(url, json={"task_token": token, "lines": [_line(6, "six")]})
    assert r.status_code == 409 and r.json()["next_seq"] == 4
    assert [ln["message"] for ln in cloud.logs(created["id"])] == ["one", "two", "three"]


def test_result_needs_the_whole_log_and_is_idempotent(cloud: Cloud, agent: httpx.Client) -> None:
    created = _create(cloud, agent)
    [a] = _claim(agent)
    url = f"/api/v1/agent/tasks/{a['id']}/result"
    report = {
        "task_token": a["task_token"],
        "status": "success",
        "exit_code": 0,
        "result": "hi\n",
        "log_lines": 2,
        "lines": [_line(1, "hi")],
    }
    r = agent.post(url, json=report)
    # Line 2 never arrived; the refused request stored nothing, so the agent resends from seq 1.
    assert r.status_code == 409 and r.json()["next_seq"] == 1
    assert cloud.task(created["id"])["status"] == "running" and cloud.logs(created["id"]) == []
    report["lines"] = [_line(1, "hi"), _line(2, "bye", "stderr")]
    assert agent.post(url, json=report).status_code == 200
    assert agent.post(url, json=report).status_code == 200  # a resend is accepted, changes nothing
    done = cloud.task(created["id"])
    assert (done["status"], done["result"], done["exit_code"]) == ("success", "hi\n", 0)
    assert [(ln["message"], ln["stream"]) for ln in cloud.logs(created["id"])] == [("hi", "stdout"), ("bye", "stderr")]
    other = dict(report, status="failed")
    r = agent.post(url, json=other)
    assert r.status_code == 409 and cloud.task(created["id"])["status"] == "success"


def test_stale_token_changes_nothing(cloud: Cloud, agent: httpx.Client) -> None:
    created = _create(cloud, agent)
    [a] = _claim(agent)
    stale = {"task_token": "0" * 32 + "-1", "status": "failed", "log_lines": 0}
    r = agent.post(f"/api/v1/agent/tasks/{a['id']}/result", json=stale)
    assert r.status_code == 409 and "task_token" in r.json()["error"]
    r = agent.post(f"/api/v1/agent/tasks/{a['id']}/logs", json={"task_token": "nope", "lines": [_line(1, "x")]})
    assert r.status_code == 409
    assert cloud.task(created["id"])["status"] == "running" and cloud.logs(created["id"]) == []


def test_heartbeat_returns_cancel_requests(cloud: Cloud, agent: httpx.Client) -> None:
    created = _create(cloud, agent, "sleep 60")
    [a] = _claim(agent)
    hb = f"/api/v1/agents/{agent.headers['X-Agent-Id']}/heartbeat"
    assert agent.post(hb, json={"running": [a["id"]]}).json()["cancel"] == []
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(agent.post, hb, json={"running": [a["id"]], "wait_s": 30})
        assert cloud.http.post(f"/api/v1/tasks/{created['id']}/cancel").status_code == 200
        assert waiting.result(timeout=10).json()["cancel"] == [a["id"]]
    r = agent.post(
        f"/api/v1/agent/tasks/{a['id']}/result",
        json={"task_token": a["task_token"], "status": "canceled", "error": "canceled", "log_lines": 0},
    )
    assert r.status_code == 200
    assert cloud.task(created["id"])["status"] == "canceled"


def test_unregistered_agent_cannot_claim(cloud: Cloud) -> None:
    # An admin may issue an agent's token before the agent first registers (e.g. for a Kubernetes Secret).
    issued = cloud.http.post("/api/v1/agents/never-registered/tokens", json={"name": "ahead"})
    assert issued.status_code == 201 and issued.json()["token"].startswith("tga_")
    r = httpx.post(
        f"{cloud.url}/api/v1/agents/never-registered/claim",
        json={"wait_s": 0},
        headers={"Authorization": f"Bearer {issued.json()['token']}"},
    )
    assert r.status_code == 404 and "register" in r.json()["error"]


def test_agent_cannot_run_a_type_it_lacks(cloud: Cloud, agent: httpx.Client) -> None:
    r = cloud.create(agent_id=agent.headers["X-Agent-Id"], type="python", command="print(1)")
    assert r.status_code == 409 and "cannot run 'python'" in r.json()["error"]


def test_finished_task_refuses_new_lines_and_is_stopped_by_heartbeat(cloud: Cloud, agent: httpx.Client) -> None:
    created = _create(cloud, agent)
    [a] = _claim(agent)
    r = agent.post(
        f"/api/v1/agent/tasks/{a['id']}/result",
        json={"task_token": a["task_token"], "status": "success", "log_lines": 0},
    )
    assert r.status_code == 200
    late = agent.post(
        f"/api/v1/agent/tasks/{a['id']}/logs", json={"task_token": a["task_token"], "lines": [_line(1, "late")]}
    )
    assert late.status_code == 409 and "next_seq" not in late.json()  # nothing to resend: stop shipping
    hb = agent.post(f"/api/v1/agents/{agent.headers['X-Agent-Id']}/heartbeat", json={"running": [a["id"]]})
    assert hb.json()["cancel"] == [a["id"]]  # no longer running here: whatever still runs should stop
    assert cloud.logs(created["id"]) == []


def test_odd_ids_and_cursors_are_caller_errors_not_500(cloud: Cloud) -> None:
    assert cloud.http.get("/api/v1/tasks/task-\u00b2").status_code == 404
    assert cloud.http.get("/api/v1/files/file-\u00b2").status_code == 404
    created = cloud.run(type="shell", command="echo x")
    url = f"/api/v1/tasks/{created['id']}/logs"
    assert cloud.http.get(url, params={"after": 10**20}).status_code == 400
    assert cloud.http.get(url, headers={b"Last-Event-ID": "\u00b2".encode()}).status_code == 200
    assert cloud.http.get("/api/v1/tasks", params={"page": 10**12}).status_code == 400


def _status(cloud: Cloud, agent_id: str) -> str:
    r = cloud.http.get(f"/api/v1/agents/{agent_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def _hold_a_claim(cloud: Cloud, agent: httpx.Client, wait_s: float) -> socket.socket:
    """A claim long-poll sent on a socket of its own and left waiting (closing the socket hangs up)."""
    agent_id = agent.headers["X-Agent-Id"]
    body = json.dumps({"capacity": 1, "wait_s": wait_s}).encode()
    head = (
        f"POST /api/v1/agents/{agent_id}/claim HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {agent.headers['Authorization']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", cloud.port))
    sock.sendall(head.encode() + body)
    return sock


def test_a_claim_in_flight_shows_its_agent_online_until_the_agent_hangs_up(make_cloud: Any) -> None:
    """An idle HTTP agent sends no heartbeats: its claim long-poll is the sighting (the registration says
    so). It stays online while the claim waits, and goes offline once it hangs up, long before the claim's
    own wait would have ended."""
    cloud = make_cloud(agent_offline_seconds=3, claim_wait_max_seconds=120)
    auth = {"Authorization": f"Bearer {AGENT}"}
    reply = httpx.post(f"{cloud.url}/api/v1/agents/register", json={"agent_id": "http-reply"}, headers=auth)
    assert reply.status_code == 200 and reply.json()["claims_show_online"] is True, reply.text
    with contextlib.closing(cloud.scripted("http-claims", ["shell"])) as idle:
        claim = _hold_a_claim(cloud, idle, wait_s=120)
        try:
            with contextlib.closing(cloud.scripted("http-none", ["shell"])):
                wait_for(lambda: _status(cloud, "http-none") == "offline", 30, "the agent with no claim offline")
            # Registered before http-none, so its registration alone would have made it offline by now.
            assert _status(cloud, "http-claims") == "online"
        finally:
            claim.close()
        hung_up = time.monotonic()
        wait_for(lambda: _status(cloud, "http-claims") == "offline", 30, "the agent offline once it hung up")
        assert time.monotonic() - hung_up < 60  # not at the end of its claim's 120 s wait
