"""JSON-RPC 2.0 at /api/rpc (seed 000) over the real cloud and agent."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from websockets.sync.client import connect as ws_connect

from tests.e2e.harness import ADMIN, Cloud


def call(cloud: Cloud, method: str, params: dict[str, Any], req_id: Any = 1) -> dict[str, Any]:
    r = cloud.http.post("/api/rpc", json={"jsonrpc": "2.0", "method": method, "params": params, "id": req_id})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == req_id
    return dict(body)


def p(**kw: Any) -> dict[str, Any]:
    return {"token": ADMIN, "target_uuid": "local", **kw}


def test_create_task_seed_shapes(cloud: Cloud) -> None:
    ping = call(cloud, "task_create_task", p(task_type={"ping": "127.0.0.1"}))["result"]
    assert isinstance(ping["id"], int)
    assert cloud.wait_final(f"task-{ping['id']}")["status"] == "success"
    ex = call(cloud, "task_create_task", p(task_type={"execute": {"cmd": "ls", "args": ["-1", "/"]}}))["result"]
    done = cloud.wait_final(f"task-{ex['id']}")
    assert done["status"] == "success" and "etc" in done["result"].split()


def test_blocking_returns_the_event_response(cloud: Cloud) -> None:
    res = call(
        cloud,
        "task_create_task_blocking",
        p(task_type={"execute": {"cmd": "echo", "args": ["a", "b"]}}, timeout_ms=30000),
    )["result"]
    assert set(res) == {
        "task_id",
        "agent_uuid",
        "task_token",
        "timestamp",
        "success",
        "error_message",
        "task_event_result",
    }
    assert res["success"] is True and res["error_message"] is None and res["agent_uuid"] == "local"
    assert res["task_event_result"] == {"execute": "a b\n"}
    ping = call(cloud, "task_create_task_blocking", p(task_type={"ping": "127.0.0.1"}, timeout_ms=10000))["result"]
    assert isinstance(ping["task_event_result"]["ping"], float)
    shell = call(cloud, "task_create_task_blocking", p(task_type={"shell": {"command": "exit 3"}}, timeout_ms=10000))[
        "result"
    ]
    assert shell["success"] is False and "exit code 3" in shell["error_message"]


def test_blocking_timeout_keeps_the_task(cloud: Cloud) -> None:
    body = call(
        cloud, "task_create_task_blocking", p(task_type={"shell": {"command": "sleep 1; echo late"}}, timeout_ms=200)
    )
    assert body["error"]["code"] == 999
    message = body["error"]["message"]
    assert message.startswith("Task ") and message.endswith("timed out after 200ms")
    n = int(message.split()[1])
    assert cloud.wait_final(f"task-{n}")["result"] == "late\n"  # the late result is still stored


def test_unknown_agent_is_not_connected(cloud: Cloud) -> None:
    body = call(cloud, "task_create_task", {"token": ADMIN, "target_uuid": "nobody", "task_type": {"ping": "x"}})
    assert body["error"] == {"code": 104, "message": "Error sending task event: Agent nobody is not connected"}


def test_query_and_delete(cloud: Cloud) -> None:
    ids = [
        call(cloud, "task_create_task_blocking", p(task_type={"execute": {"cmd": "true"}}, timeout_ms=10000))["result"][
            "task_id"
        ]
        for _ in range(3)
    ]
    failed = call(cloud, "task_create_task_blocking", p(task_type={"execute": {"cmd": "false"}}, timeout_ms=10000))[
        "result"
    ]["task_id"]
    running = call(cloud, "task_create_task", p(task_type={"execute": {"cmd": "sleep", "args": ["30"]}}))["result"][
        "id"
    ]
    rows = call(
        cloud,
        "task_query",
        {"token": ADMIN, "task_data_query": {"condition": [{"uuid": "local"}, {"type": "execute"}, {"limit": 10}]}},
    )["result"]
    got = [r["task_id"] for r in rows]
    assert got[:5] == [running, failed, *reversed(ids)]  # newest first
    rec = next(r for r in rows if r["task_id"] == ids[0])
    assert rec["task_event_type"] == {"execute": {"cmd": "true", "args": []}}
    assert rec["success"] is True and rec["uuid"] == "local" and rec["cron_source"] is None
    only_failed = call(
        cloud,
        "task_query",
        {"token": ADMIN, "task_data_query": {"condition": [{"type": "execute"}, {"is_failure": True}]}},
    )["result"]
    assert [r["task_id"] for r in only_failed] == [failed]
    last = call(cloud, "task_query", {"token": ADMIN, "task_data_query": {"condition": [{"last": True}]}})["result"]
    assert len(last) == 1
    deleted = call(cloud, "task_delete", {"token": ADMIN, "conditions": [{"type": "execute"}, {"uuid": "local"}]})
    assert deleted["result"]["success"] is True and deleted["result"]["condition_count"] == 2
    assert deleted["result"]["deleted"] >= 4
    left = call(cloud, "task_query", {"token": ADMIN, "task_data_query": {"condition": [{"type": "execute"}]}})
    assert [r["task_id"] for r in left["result"]] == [running]  # never a running task
    cloud.http.post(f"/api/v1/tasks/task-{running}/cancel")
    bad = call(cloud, "task_query", {"token": ADMIN, "task_data_query": {"condition": [{"colour": "red"}]}})
    assert bad["error"]["code"] == -32602 and "colour" in bad["error"]["message"]


def test_conditions_naming_too_many_uuid_type_pairs_are_refused_before_the_scope_checks(cloud: Cloud) -> None:
    """Each (uuid, type) pair is checked against the token's scope: a body of thousands of distinct ones
    would be a product-sized loop on the event loop, so past rpc_max_scope_checks the call is refused."""
    many = [{"uuid": f"agent-{i}"} for i in range(20)] + [{"type": f"type-{i}"} for i in range(20)]
    refused = call(cloud, "task_query", {"token": ADMIN, "task_data_query": {"condition": many}})
    assert refused["error"]["code"] == -32602, refused
    assert "400 pairs" in refused["error"]["message"] and "rpc_max_scope_checks" in refused["error"]["message"]
    repeated = [{"uuid": "local"}] * 300 + [{"type": "execute"}] * 300  # the same pair, named many times
    assert "result" in call(cloud, "task_query", {"token": ADMIN, "task_data_query": {"condition": repeated}})


def test_protocol_errors_and_batches(cloud: Cloud) -> None:
    r = cloud.http.post("/api/rpc", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.json()["error"]["code"] == -32700 and r.json()["id"] is None
    assert cloud.http.post("/api/rpc", json=[]).json()["error"]["code"] == -32600
    assert cloud.http.post("/api/rpc", json={"method": "task_query"}).json()["error"]["code"] == -32600
    assert call(cloud, "no_such_method", {})["error"]["code"] == -32601
    missing = call(cloud, "task_create_task", {"token": ADMIN})
    assert missing["error"]["code"] == -32602 and "target_uuid" in missing["error"]["message"]
    bad_token = call(cloud, "task_query", {"token": "wrong"})
    assert bad_token["error"]["code"] == -32001
    empty_cmd = call(cloud, "task_create_task", p(task_type={"execute": {"cmd": ""}}))
    assert empty_cmd["error"]["code"] == -32602 and "params.cmd" in empty_cmd["error"]["message"]
    batch = cloud.http.post(
        "/api/rpc",
        json=[
            {"jsonrpc": "2.0", "method": "task_query", "params": {"token": ADMIN}, "id": "a"},
            {"jsonrpc": "2.0", "method": "nope", "id": "b"},
            {"jsonrpc": "2.0", "method": "task_query", "params": {"token": ADMIN}},  # a notification: no answer
            7,
        ],
    ).json()
    assert [a.get("id") for a in batch] == ["a", "b", None]
    assert "result" in batch[0] and batch[1]["error"]["code"] == -32601 and batch[2]["error"]["code"] == -32600
    only_notes = cloud.http.post("/api/rpc", json=[{"jsonrpc": "2.0", "method": "task_query", "params": {}}])
    assert only_notes.status_code == 204


def test_delete_without_conditions_needs_all(cloud: Cloud) -> None:
    """An empty (or forgotten) condition list used to delete every finished task; now it takes "all": true."""
    done = [
        call(cloud, "task_create_task_blocking", p(task_type={"shell": {"command": "true"}}, timeout_ms=10000))[
            "result"
        ]["task_id"]
        for _ in range(2)
    ]
    running = call(cloud, "task_create_task", p(task_type={"shell": {"command": "sleep 30"}}))["result"]["id"]
    refusals: list[dict[str, Any]] = [{"conditions": []}, {}, {"conditions": [], "all": False}]
    for params in refusals:
        refused = call(cloud, "task_delete", {"token": ADMIN, **params})
        assert refused["error"]["code"] == -32602, refused
        assert "conditions" in refused["error"]["message"] and '"all": true' in refused["error"]["message"]
    not_bool = call(cloud, "task_delete", {"token": ADMIN, "conditions": [], "all": "yes"})
    assert not_bool["error"]["code"] == -32602 and "all" in not_bool["error"]["message"]
    assert all(cloud.http.get(f"/api/v1/tasks/task-{n}").status_code == 200 for n in done)
    # With conditions, "all" changes nothing: the conditions still choose.
    one = call(cloud, "task_delete", {"token": ADMIN, "conditions": [{"task_id": done[0]}], "all": True})
    assert one["result"] == {"success": True, "deleted": 1, "condition_count": 1}
    assert cloud.http.get(f"/api/v1/tasks/task-{done[1]}").status_code == 200
    everything = call(cloud, "task_delete", {"token": ADMIN, "conditions": [], "all": True})
    assert everything["result"]["success"] is True and everything["result"]["deleted"] >= 1
    assert cloud.http.get(f"/api/v1/tasks/task-{done[1]}").status_code == 404
    assert cloud.http.get(f"/api/v1/tasks/task-{running}").status_code == 200  # never an unfinished task
    cloud.http.post(f"/api/v1/tasks/task-{running}/cancel")


def test_token_in_the_authorization_header(cloud: Cloud) -> None:
    """NodeGet-style clients send the token as a header instead of in params."""
    body = {"jsonrpc": "2.0", "method": "task_query", "params": {}, "id": 1}
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=cloud.url) as bare:  # no default admin header: only what this call sends
        assert isinstance(bare.post("/api/rpc", json=body, headers=headers).json()["result"], list)
        none = bare.post("/api/rpc", json=body).json()
        assert none["error"]["code"] == -32001 and "Authorization" in none["error"]["message"]
        wrong = bare.post("/api/rpc", json=body, headers={"Authorization": "Bearer wrong"}).json()
        assert wrong["error"]["code"] == -32001
        # params.token, when given, is the one used
        explicit = {**body, "params": {"token": "wrong"}}
        assert bare.post("/api/rpc", json=explicit, headers=headers).json()["error"]["code"] == -32001


def test_task_id_written_as_rest_shows_it(cloud: Cloud) -> None:
    done = call(cloud, "task_create_task_blocking", p(task_type={"shell": {"command": "true"}}, timeout_ms=10000))
    n = done["result"]["task_id"]
    for written in (n, f"task-{n}", str(n)):
        found = call(cloud, "task_query", {"token": ADMIN, "task_data_query": {"condition": [{"task_id": written}]}})
        assert [r["task_id"] for r in found["result"]] == [n], written
    bad = call(cloud, "task_query", {"token": ADMIN, "task_data_query": {"condition": [{"task_id": "job-3"}]}})
    assert bad["error"]["code"] == -32602 and "task-104" in bad["error"]["message"]
    gone = call(cloud, "task_delete", {"token": ADMIN, "conditions": [{"task_id": f"task-{n}"}]})
    assert gone["result"]["deleted"] == 1


def _ws_url(cloud: Cloud) -> str:
    return cloud.url.replace("http://", "ws://") + "/api/rpc"


def test_json_rpc_over_websocket(cloud: Cloud) -> None:
    """The same methods over a WebSocket; calls run concurrently and answers are matched by id."""
    with ws_connect(_ws_url(cloud), additional_headers={"Authorization": f"Bearer {ADMIN}"}) as ws:
        slow = p(task_type={"shell": {"command": "sleep 1; echo slow"}}, timeout_ms=20000)
        ws.send(orjson.dumps({"jsonrpc": "2.0", "method": "task_create_task_blocking", "params": slow, "id": "slow"}))
        # Sent after the blocking call, answered before it: the socket is not held by the wait.
        ws.send(orjson.dumps({"jsonrpc": "2.0", "method": "task_query", "params": {}, "id": "quick"}))
        first = orjson.loads(ws.recv(timeout=15))
        assert first["id"] == "quick" and isinstance(first["result"], list)
        second = orjson.loads(ws.recv(timeout=30))
        assert second["id"] == "slow" and second["result"]["task_event_result"] == {"shell": "slow\n"}
        # Protocol errors answer on the socket and keep it open; a batch is one message.
        ws.send("{not json")
        assert orjson.loads(ws.recv(timeout=10))["error"]["code"] == -32700
        batch = [
            {"jsonrpc": "2.0", "method": "nope", "id": 1},
            {"jsonrpc": "2.0", "method": "task_query", "params": {"token": "wrong"}, "id": 2},
        ]
        ws.send(orjson.dumps(batch))
        answers = orjson.loads(ws.recv(timeout=10))
        assert [a["error"]["code"] for a in answers] == [-32601, -32001]
        # A message over max_request_bytes is refused with an answer, not a dropped socket.
        ws.send(b"[" + b" " * (2 * 1024 * 1024 + 1) + b"]")
        huge = orjson.loads(ws.recv(timeout=10))
        assert huge["error"]["code"] == -32700 and "max_request_bytes" in huge["error"]["message"]
        ws.send(orjson.dumps({"jsonrpc": "2.0", "method": "task_query", "params": {}, "id": 3}))
        assert orjson.loads(ws.recv(timeout=10))["id"] == 3


def test_websocket_without_a_header_takes_params_token(cloud: Cloud) -> None:
    with ws_connect(_ws_url(cloud)) as ws:
        ws.send(orjson.dumps({"jsonrpc": "2.0", "method": "task_query", "params": {}, "id": 1}))
        assert orjson.loads(ws.recv(timeout=10))["error"]["code"] == -32001
        ws.send(orjson.dumps({"jsonrpc": "2.0", "method": "task_query", "params": {"token": ADMIN}, "id": 2}))
        assert isinstance(orjson.loads(ws.recv(timeout=10))["result"], list)
