"""Hostile and sloppy input at the edge: refused with a clear 4xx before it can poison a row, exhaust
memory or hold a connection, on both database backends."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ADMIN, REGISTER, AgentClient, Cloud

DEEP = 300


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"x": value}
    return value


def _read_all(s: socket.socket) -> bytes:
    """Everything the cloud sends until it closes the connection (an answer may come in several segments)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _post_raw(cloud: Cloud, path: str, body: bytes, token: str = ADMIN) -> httpx.Response:
    return httpx.post(
        cloud.url + path,
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )


@pytest.fixture
def agent(cloud: Cloud, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A scripted agent registered under an id of the test's own."""
    with contextlib.closing(cloud.scripted(f"hostile-{request.node.name}")) as client:
        yield client


def _everything_still_reads(cloud: Cloud) -> None:
    """The reads a poisoned row used to break: the task list and JSON-RPC task_query."""
    assert cloud.http.get("/api/v1/tasks", params={"page_size": 100}).status_code == 200
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "task_query", "params": {"token": ADMIN}}
    r = cloud.http.post("/api/rpc", json=rpc)
    assert r.status_code == 200 and "result" in r.json(), r.text


@pytest.mark.parametrize(
    ("field", "body_part"),
    [
        ("command", '"command": "echo \\udfff"'),
        ("env.X", '"command": "true", "env": {"X": "\\udfff"}'),
        ("params.note", '"command": "true", "params": {"note": "a\\ud800b"}'),
    ],
)
def test_a_lone_surrogate_is_refused_and_nothing_is_stored(cloud: Cloud, field: str, body_part: str) -> None:
    before = cloud.http.get("/api/v1/tasks").json()["total"]
    body = f'{{"agent_id": "local", "type": "shell", {body_part}}}'.encode()
    r = _post_raw(cloud, "/api/v1/tasks", body)
    assert r.status_code == 400, r.text
    assert "invalid JSON" in r.json()["error"] and "surrogate" in r.json()["error"]
    assert cloud.http.get("/api/v1/tasks").json()["total"] == before
    _everything_still_reads(cloud)


def test_invalid_utf8_is_refused(cloud: Cloud) -> None:
    r = _post_raw(cloud, "/api/v1/tasks", b'{"agent_id": "local", "type": "shell", "command": "echo \xff\xfe"}')
    assert r.status_code == 400 and "UTF-8" in r.json()["error"], r.text


def test_a_nul_character_is_refused_naming_the_field(cloud: Cloud) -> None:
    r = cloud.create(type="shell", command="true", env={"A": "x\x00y"})
    assert r.status_code == 400 and r.json()["error"].startswith("env.A: contains a NUL"), r.text
    _everything_still_reads(cloud)


def test_a_deep_document_from_a_caller_is_refused(cloud: Cloud) -> None:
    r = _post_raw(
        cloud,
        "/api/v1/tasks",
        json.dumps({"agent_id": "local", "type": "shell", "command": "true", "params": _nested(DEEP)}).encode(),
    )
    assert r.status_code == 400 and "nested deeper than 64 levels" in r.json()["error"], r.text
    assert r.json()["error"].startswith("params.x.x")


def test_a_deep_result_from_an_agent_is_stored_cut_and_stays_readable(cloud: Cloud, agent: httpx.Client) -> None:
    agent_id = agent.headers["X-Agent-Id"]
    task = cloud.create(agent_id=agent_id, type="shell", command="true").json()
    [assigned] = agent.post(f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 0}).json()
    report = {"task_token": assigned["task_token"], "status": "success", "data": _nested(DEEP), "log_lines": 0}
    r = agent.post(f"/api/v1/agent/tasks/{task['id']}/result", json=report)
    assert r.status_code == 200, r.text
    data = cloud.task(task["id"])["data"]
    depth = 0
    while isinstance(data, dict):
        data, depth = data["x"], depth + 1
    assert data == "<cut: nested deeper than 64 levels>" and depth == 63
    _everything_still_reads(cloud)


def test_nul_characters_from_an_agent_are_stored_as_replacement_characters(cloud: Cloud, agent: httpx.Client) -> None:
    agent_id = agent.headers["X-Agent-Id"]
    task = cloud.create(agent_id=agent_id, type="shell", command="true").json()
    [assigned] = agent.post(f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 0}).json()
    token = assigned["task_token"]
    lines = {"task_token": token, "lines": [{"seq": 1, "stream": "stdout", "message": "bin\x00ary"}]}
    assert agent.post(f"/api/v1/agent/tasks/{task['id']}/logs", json=lines).status_code == 200
    report = {"task_token": token, "status": "success", "result": "a\x00b", "error": "", "log_lines": 1}
    assert agent.post(f"/api/v1/agent/tasks/{task['id']}/result", json=report).status_code == 200
    assert cloud.task(task["id"])["result"] == "a\ufffdb"
    assert cloud.logs(task["id"])[0]["message"] == "bin\ufffdary"


def _rss_kib(cloud: Cloud) -> int:
    # A cloud in a server thread shares this process; the test's client keeps none of what it sends.
    pid = os.getpid() if cloud.proc is None else cloud.proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def _headers(token: str, length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\n{size}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(("token", "status"), [("wrong-token", b"401"), (ADMIN, b"413")])
def test_a_huge_body_is_answered_before_it_is_sent(cloud: Cloud, token: str, status: bytes) -> None:
    """A 30 MB body announced by its length: the cloud answers from the headers alone (the token first,
    then the size), before a byte of the body is sent."""
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=10) as s:
        s.sendall(_headers(token, 30 << 20))
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:300]


def test_a_huge_chunked_body_is_cut_off_without_growing_the_cloud(cloud: Cloud) -> None:
    """30 MB without a declared length: the cloud stops at its 2 MiB limit with a 413 and keeps serving;
    its memory does not grow by the body (it used to take ~840 MB for 30 MB)."""
    before = _rss_kib(cloud)
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"a" * (1 << 16))
    start = b'{"agent_id": "local", "command": "'
    answer = b""
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=10) as s:
        s.sendall(_headers(ADMIN, None) + b"%x\r\n%s\r\n" % (len(start), start))
        try:
            for _ in range(30 * 16):
                if select.select([s], [], [], 0)[0]:
                    break
                s.sendall(chunk)
            answer = s.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the cloud closed the connection on the rest of the body; its answer may be lost with it
    if answer:
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert _rss_kib(cloud) - before < 20 * 1024
    assert cloud.http.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/api/v1/tasks", "/api/v1/files", "/api/v1/agents", "/api/v1/agents/local/claim", "/api/v1/tasks/task-1/logs"],
)
def test_a_non_ascii_token_is_401(cloud: Cloud, path: str) -> None:
    method = "POST" if path.endswith("claim") else "GET"
    r = httpx.request(method, cloud.url + path, headers={b"Authorization": "Bearer tökén-部署".encode()}, json={})
    assert r.status_code == 401 and r.json()["error"].startswith("invalid"), r.text


def test_json_rpc_batches_are_capped(cloud: Cloud) -> None:
    call = {"jsonrpc": "2.0", "method": "task_query", "params": {"token": ADMIN}}
    r = cloud.http.post("/api/rpc", json=[{**call, "id": i} for i in range(51)])
    assert r.json()["error"]["code"] == -32600 and "at most 50 calls" in r.json()["error"]["message"]
    r = cloud.http.post("/api/rpc", json=[{**call, "id": i} for i in range(3)])
    assert [a["id"] for a in r.json()] == [0, 1, 2]


def test_json_rpc_refuses_a_lone_surrogate_as_a_parse_error(cloud: Cloud) -> None:
    r = _post_raw(
        cloud, "/api/rpc", b'{"jsonrpc": "2.0", "id": 1, "method": "task_query", "params": {"token": "\\udfff"}}'
    )
    assert r.status_code == 200 and r.json()["error"]["code"] == -32700, r.text


def _slow_cloud(make_cloud: Any) -> Cloud:
    c: Cloud = make_cloud(request_idle_timeout_seconds="1", rpc_max_answer_bytes="2048")
    return c


@pytest.fixture
def slow_cloud(make_cloud: Any) -> Cloud:
    """A cloud with a 1 s idle timeout and a 2 KiB JSON-RPC answer limit."""
    return _slow_cloud(make_cloud)


def test_half_sent_requests_are_dropped_and_the_cloud_keeps_serving(slow_cloud: Cloud) -> None:
    held = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", slow_cloud.port), timeout=10)
        # Half the connections stop inside the headers, half say nothing at all.
        if i % 2:
            s.sendall(b"GET /api/v1/tasks HTTP/1.1\r\nHost: x\r\n")
        held.append(s)
    assert slow_cloud.http.get("/healthz").status_code == 200  # served while they are held
    started = time.monotonic()
    for s in held:
        assert s.recv(100) == b""  # closed by the cloud
        s.close()
    assert time.monotonic() - started < 10


def test_a_stalled_body_gets_408(slow_cloud: Cloud) -> None:
    with socket.create_connection(("127.0.0.1", slow_cloud.port), timeout=10) as s:
        s.sendall(
            b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ADMIN}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"agent_id": '
        )
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"nothing received for 1 s" in answer


def test_a_json_rpc_answer_past_its_limit_is_an_error(slow_cloud: Cloud) -> None:
    slow_cloud.agent("local")
    for _ in range(20):
        assert slow_cloud.create(type="shell", command="true").status_code == 201
    call = {"jsonrpc": "2.0", "id": 7, "method": "task_query", "params": {"token": ADMIN}}
    r = slow_cloud.http.post("/api/rpc", json=call)
    assert r.status_code == 200
    error = r.json()["error"]
    assert error["code"] == -32000 and "2048-byte limit" in error["message"] and r.json()["id"] == 7


def test_a_row_poisoned_before_strict_input_stays_readable(cloud: Cloud, agent: httpx.Client) -> None:
    """A lone surrogate written into a JSON column by an older version (or by hand) reads back as U+FFFD
    everywhere, and the agent still gets the task (it used to end `agent lost` unrun)."""
    from sqlalchemy import create_engine, text

    agent_id = agent.headers["X-Agent-Id"]
    task = cloud.create(agent_id=agent_id, type="shell", command="true").json()
    engine = create_engine(cloud.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE tasks SET params = :p WHERE id = :n"),
                {"p": '{"note": "x\\udfffy"}', "n": int(task["id"].removeprefix("task-"))},
            )
    finally:
        engine.dispose()
    assert cloud.task(task["id"])["params"] == {"note": "x\ufffdy"}
    _everything_still_reads(cloud)
    [assigned] = agent.post(f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 0}).json()
    assert assigned["id"] == task["id"] and assigned["params"] == {"note": "x\ufffdy"}


def test_a_non_ascii_task_token_is_a_400_naming_it(cloud: Cloud, agent: httpx.Client) -> None:
    r = agent.post("/api/v1/agent/tasks/task-1/logs", json={"task_token": "tökén", "lines": []})
    assert r.status_code == 400 and r.json()["error"].startswith("task_token:"), r.text
    r = agent.post(f"/api/v1/agents/{agent.headers['X-Agent-Id']}/heartbeat", json={"tokens": {"task-1": "部署"}})
    assert r.status_code == 400 and r.json()["error"].startswith("tokens.task-1:"), r.text


@pytest.mark.parametrize(
    ("method", "path", "token", "name"),
    [
        ("GET", "/api/v1/tasks?agent_id=%00", ADMIN, "agent_id"),
        ("GET", "/api/v1/tasks?q=a%00b", ADMIN, "q"),
        ("GET", "/api/v1/tasks?type=%00", ADMIN, "type"),
        ("POST", "/api/v1/agents/x%00/claim", "agent", "agent_id"),
        ("POST", "/api/v1/agents/x%00/heartbeat", "agent", "agent_id"),
    ],
)
def test_a_nul_in_a_path_or_query_value_is_a_400_naming_it(
    cloud: Cloud, method: str, path: str, token: str, name: str
) -> None:
    if token == "agent":  # an agent token, of an agent of its own
        with AgentClient(cloud.url) as agent:
            assert agent.post(REGISTER, json={"agent_id": "nul-paths"}).status_code == 200
            token = agent.headers["Authorization"].removeprefix("Bearer ")
    r = httpx.request(method, cloud.url + path, headers={"Authorization": f"Bearer {token}"}, json={"wait_s": 0})
    assert r.status_code == 400 and r.json()["error"].startswith(f"{name}: contains a NUL"), r.text


def test_a_stalled_upload_gets_408_and_leaves_nothing_behind(slow_cloud: Cloud) -> None:
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n\r\n' + b"a" * 1000
    with socket.create_connection(("127.0.0.1", slow_cloud.port), timeout=10) as s:
        s.sendall(
            b"POST /api/v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            + f"Authorization: Bearer {ADMIN}\r\nContent-Length: 100000\r\n\r\n".encode()
            + head
        )
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert slow_cloud.http.get("/api/v1/files").json()["total"] == 0
    assert not any(p.is_file() for p in (slow_cloud.data_dir / "files").rglob("*"))


def _claimed(cloud: Cloud, agent: httpx.Client) -> tuple[str, str]:
    agent_id = agent.headers["X-Agent-Id"]
    task = cloud.create(agent_id=agent_id, type="shell", command="true").json()
    [assigned] = agent.post(f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 0}).json()
    return task["id"], assigned["task_token"]


def test_numbers_too_large_for_the_database_are_400(cloud: Cloud, agent: httpx.Client) -> None:
    task_id, token = _claimed(cloud, agent)
    for field, value in (("exit_code", 2**63), ("exit_code", 2**31), ("log_lines", 2**63 - 1)):
        report = {"task_token": token, "status": "success", "log_lines": 0, field: value}
        r = agent.post(f"/api/v1/agent/tasks/{task_id}/result", json=report)
        assert r.status_code == 400 and r.json()["error"].startswith(f"{field}:"), r.text
    call: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "task_query", "params": {"token": ADMIN}}
    call["params"]["task_data_query"] = {"condition": [{"task_id": 2**63}]}
    error = cloud.http.post("/api/rpc", json=call).json()["error"]
    assert error["code"] == -32602 and "task_id" in error["message"]


def test_an_agents_data_is_capped_like_its_output(make_cloud: Any) -> None:
    """`data` is returned in every read of the task: past max_log_bytes it is stored as a marker."""
    c: Cloud = make_cloud(max_log_bytes="65536")
    client = AgentClient(c.url, timeout=60)
    client.headers["X-Agent-Id"] = "capped"
    assert client.post("/api/v1/agents/register", json={"agent_id": "capped"}).status_code == 200
    task_id, token = _claimed(c, client)
    data = {"rows": ["x" * 1000] * 200}
    report = {"task_token": token, "status": "success", "log_lines": 0, "data": data}
    assert client.post(f"/api/v1/agent/tasks/{task_id}/result", json=report).status_code == 200
    stored = c.task(task_id)["data"]
    assert stored["truncated"] is True and stored["bytes"] > 200_000 and "65536-byte" in stored["reason"]
    client.close()


def test_a_json_rpc_query_stops_reading_at_its_answer_limit(slow_cloud: Cloud) -> None:
    """Tasks with large results: the query stops at the first row past the limit, not after loading all."""
    slow_cloud.agent("local")
    big = slow_cloud.run(type="shell", command="head -c 3000 /dev/zero | tr '\\0' a")
    assert len(big["result"]) == 3000
    call = {"jsonrpc": "2.0", "id": 3, "method": "task_query", "params": {"token": ADMIN}}
    error = slow_cloud.http.post("/api/rpc", json=call).json()["error"]
    assert error["code"] == -32000 and "the first 1 matching tasks pass the 2048-byte limit" in error["message"]


def test_a_body_dripping_slower_than_the_minimum_rate_gets_408(slow_cloud: Cloud) -> None:
    """A byte every 0.5 s never trips the 1 s idle timeout, but averages far below 1 KiB/s."""
    with socket.create_connection(("127.0.0.1", slow_cloud.port), timeout=10) as s:
        s.sendall(
            b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ADMIN}\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        for _ in range(10):
            if select.select([s], [], [], 0.5)[0]:
                break
            s.sendall(b" ")
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408") and b"slower than 1024 bytes/s" in answer, answer[:300]
