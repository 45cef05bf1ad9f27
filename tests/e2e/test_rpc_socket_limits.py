"""The JSON-RPC WebSocket's handshake check and its limits: a bad header is refused before the handshake, a
socket without a valid token and an idle socket are closed, a socket with a call running is not
(docs/api.md, JSON-RPC 2.0)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.e2e.harness import ADMIN, Cloud

AUTH_S, IDLE_S = 1, 2
CLOUD_SETTINGS = {"rpc_auth_timeout_seconds": AUTH_S, "rpc_idle_timeout_seconds": IDLE_S}


def socket(cloud: Cloud, token: str | None = None) -> ClientConnection:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return ws_connect(cloud.url.replace("http://", "ws://") + "/api/rpc", additional_headers=headers, open_timeout=20)


def call(ws: ClientConnection, method: str, params: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    ws.send(orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))
    return dict(orjson.loads(ws.recv(timeout=timeout)))


def closed(ws: ClientConnection, timeout: float = 20) -> tuple[int, str]:
    """Wait for the server's close (no message comes before it); its code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=timeout)
    rcvd = info.value.rcvd
    assert rcvd is not None, "closed without a close frame"
    return rcvd.code, rcvd.reason


def test_a_bad_header_is_refused_before_the_handshake(cloud: Cloud) -> None:
    with pytest.raises(InvalidStatus) as info:
        socket(cloud, "tgp_wrong")
    assert info.value.response.status_code == 401
    assert orjson.loads(info.value.response.body or b"{}")["error"]
    with pytest.raises(InvalidStatus) as info:
        socket(cloud, cloud.agent_token("local"))  # an agent's token is not a caller's
    assert info.value.response.status_code == 403
    assert "caller token" in orjson.loads(info.value.response.body or b"{}")["error"]


def test_a_socket_without_a_valid_token_is_closed_whatever_it_sends(cloud: Cloud) -> None:
    opened = time.monotonic()
    with socket(cloud) as ws:
        # Seed 000's clients send the token in each call, so the socket opens; calls without a good one
        # are answered, and do not keep it open.
        assert call(ws, "task_query", {})["error"]["code"] == -32001
        assert call(ws, "task_query", {"token": "tgp_wrong"})["error"]["code"] == -32001
        code, reason = closed(ws)
    assert time.monotonic() - opened >= AUTH_S
    assert (code, reason) == (
        4401,
        f"no valid token within {AUTH_S} s (rpc_auth_timeout_seconds): send Authorization or params.token",
    )


def test_a_valid_params_token_lifts_the_auth_limit_and_idle_closes_later(cloud: Cloud) -> None:
    with socket(cloud) as ws:
        assert isinstance(call(ws, "task_query", {"token": ADMIN})["result"], list)
        # Closed by the idle limit (4008), no longer by the auth limit that would have come first (4401).
        assert closed(ws) == (4008, f"idle for {IDLE_S} s (rpc_idle_timeout_seconds)")


def test_an_idle_socket_is_closed(cloud: Cloud) -> None:
    opened = time.monotonic()
    with socket(cloud, ADMIN) as ws:
        assert closed(ws) == (4008, f"idle for {IDLE_S} s (rpc_idle_timeout_seconds)")
    assert time.monotonic() - opened >= IDLE_S


def test_a_call_running_longer_than_the_idle_limit_is_answered(cloud: Cloud) -> None:
    with socket(cloud, ADMIN) as ws:
        slow = {"target_uuid": "local", "task_type": {"shell": {"command": f"sleep {IDLE_S + 2}; echo done"}}}
        answer = call(ws, "task_create_task_blocking", {**slow, "timeout_ms": 60_000}, timeout=60)
        assert answer["result"]["task_event_result"] == {"shell": "done\n"}, answer
        assert closed(ws) == (4008, f"idle for {IDLE_S} s (rpc_idle_timeout_seconds)")
