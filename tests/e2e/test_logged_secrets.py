"""A token a careless caller puts in a URL (a path segment, a WebSocket query string) never reaches the
cloud's log in clear: the access log and uvicorn's handshake lines show it masked. A WebSocket's access line
has its handshake's status (101, or the refusal's)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.harness import Cloud, wait_for


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The cloud's log lines (the test's own HTTP client logs its URLs too)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith(("tiangong", "uvicorn"))]


def test_a_token_in_a_path_or_a_websocket_query_is_masked_in_the_log(
    make_cloud: Callable[..., Cloud], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cloud = make_cloud()
    secret = "tgp_" + secrets.token_urlsafe(32)
    # The token itself where its id belongs.
    assert cloud.http.get(f"/api/v1/tokens/{secret}").status_code in (400, 404)
    # A browser-style client putting its token in the query string of the JSON-RPC socket.
    ws_url = cloud.url.replace("http://", "ws://") + f"/api/rpc?token={secret}"
    with connect(ws_url, open_timeout=20):
        pass
    # The shell socket refusing a handshake without a token: the access line has the refusal's status.
    with pytest.raises(InvalidStatus):
        connect(cloud.url.replace("http://", "ws://") + f"/api/v1/tasks/task-1/shell?token={secret}", open_timeout=20)

    def logged() -> bool:
        lines = _lines(caplog)
        return (
            any("GET /api/v1/tokens/tgp_******" in ln for ln in lines)
            and any('"WebSocket /api/rpc?******"' in ln for ln in lines)
            and any(ln.startswith("WEBSOCKET /api/v1/tasks/task-1/shell 401 ") for ln in lines)
        )

    wait_for(logged, 20, "the access log and uvicorn's handshake line")
    assert not [ln for ln in _lines(caplog) if secret[4:] in ln]
