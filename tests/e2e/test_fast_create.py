"""A plain `POST /api/v1/tasks` is answered by cloud.api.fast_create, everything else by the FastAPI route:
the same request gets the same answer either way. A body sent chunked (no Content-Length) always goes to
the route, so each case below is sent both ways and the answers compared."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import cloud.api.fast_create as fast_create
from tests.e2e.harness import ADMIN, Cloud

VOLATILE = {"id", "created_at", "updated_at", "started_at", "finished_at", "expires_at", "duration_ms"}


def _count_fast(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A "fast" for each task the middleware creates from now on (the cloud runs in this process)."""
    taken: list[str] = []
    queue = fast_create.queue_task

    async def counted(*args: Any, **kwargs: Any) -> Any:
        taken.append("fast")
        return await queue(*args, **kwargs)

    monkeypatch.setattr(fast_create, "queue_task", counted)
    return taken


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which path created each task: "fast" for the middleware."""
    return _count_fast(monkeypatch)


def _post(cloud: Cloud, body: bytes, *, chunked: bool, token: str = ADMIN, **headers: str) -> httpx.Response:
    sent: bytes | Iterator[bytes] = iter([body]) if chunked else body
    return cloud.http.post(
        "/api/v1/tasks",
        content=sent,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}", **headers},
    )


def _both(cloud: Cloud, body: Any, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _post(cloud, raw, chunked=False, **kwargs), _post(cloud, raw, chunked=True, **kwargs)


def _stable(task: dict[str, Any]) -> dict[str, Any]:
    stable = {k: v for k, v in task.items() if k not in VOLATILE}
    if stable["status"] in ("pending", "running"):
        # A task not ended yet (an async create's, or a sync one's that timed out) is pending, or running when
        # the agent's waiting claim took it in the create's own transaction: that depends on whether the
        # agent's claim was back yet, for either path alike.
        stable["status"] = "queued"
        del stable["attempts"]
    return stable


@pytest.mark.parametrize("sync", [False, True])
def test_a_plain_create_is_answered_as_the_route_answers_it(cloud: Cloud, served: list[str], sync: bool) -> None:
    body = {"agent_id": "local", "type": "shell", "command": "echo fast path", "sync": sync}
    fast, route = _both(cloud, body)
    assert fast.status_code == route.status_code == 201, (fast.text, route.text)
    assert served == ["fast"]  # the chunked one went to the route
    assert _stable(fast.json()) == _stable(route.json())
    assert fast.headers["content-type"] == route.headers["content-type"] == "application/json"
    assert fast.headers["x-request-id"] and route.headers["x-request-id"]
    # What the create answered is what reading the task answers.
    if sync:
        assert fast.json()["status"] == "success" and fast.json()["result"] == "fast path\n"
        assert cloud.task(fast.json()["id"]) == fast.json()


def test_a_repeated_request_id_is_the_same_task_with_200(cloud: Cloud, served: list[str]) -> None:
    key = f"fast-{uuid.uuid4().hex[:12]}"
    body = {"agent_id": "local", "type": "shell", "command": "true", "request_id": key}
    first, again = _both(cloud, body)
    assert (first.status_code, again.status_code) == (201, 200)
    third = _post(cloud, json.dumps(body).encode(), chunked=False)
    assert third.status_code == 200 and third.json()["id"] == first.json()["id"] == again.json()["id"]
    assert served == ["fast", "fast"]
    other = _both(cloud, {**body, "command": "false"})
    assert [r.status_code for r in other] == [409, 409]
    assert other[0].json() == other[1].json() and other[0].json()["task_id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"{not json", 400, id="invalid JSON"),
        pytest.param(b"[]", 400, id="not an object"),
        pytest.param(b"[" * 200 + b"]" * 200, 400, id="too deep"),
        pytest.param(b'{"agent_id": "local", "type": "shell", "colour": 1}', 400, id="unknown field"),
        pytest.param(b'{"agent_id": "local", "command": "true"}', 400, id="no type"),
        pytest.param(b'{"agent_id": "local", "type": "shell", "command": "true", "timeout": 301}', 400, id="timeout"),
        pytest.param(b'{"agent_id": "nobody-here", "type": "ping", "sync": true, "timeout": 1}', None, id="no agent"),
        pytest.param(b'{"agent_id": "local", "type": "shell", "command": "\\u0000"}', 400, id="NUL"),
        pytest.param('{"agent_id": "local", "type": "shell", "command": "é ✓"}'.encode(), 201, id="UTF-8"),
    ],
)
def test_every_other_answer_is_the_routes(cloud: Cloud, body: bytes, status: int | None) -> None:
    fast, route = _both(cloud, body)
    assert fast.status_code == route.status_code, (fast.text, route.text)
    if status is not None:
        assert fast.status_code == status, fast.text
    if fast.status_code >= 400:
        assert fast.json() == route.json() and set(fast.json()) >= {"error"}
    else:
        assert _stable(fast.json()) == _stable(route.json())


@pytest.mark.parametrize(("token", "status"), [("not-a-token", 401), ("tgp_" + "x" * 30, 401)])
def test_a_refused_token_is_the_routes_answer(cloud: Cloud, token: str, status: int) -> None:
    fast, route = _both(cloud, {"agent_id": "local", "type": "ping"}, token=token)
    assert fast.status_code == route.status_code == status
    assert fast.json() == route.json()


def test_an_agent_token_cannot_create_tasks_either_way(cloud: Cloud) -> None:
    token = cloud.agent_token("local")
    fast, route = _both(cloud, {"agent_id": "local", "type": "ping"}, token=token)
    assert fast.status_code == route.status_code == 403
    assert fast.json() == route.json()


def test_an_idempotency_key_header_goes_to_the_route(cloud: Cloud, served: list[str]) -> None:
    key = f"hdr-{uuid.uuid4().hex[:12]}"
    body = b'{"agent_id": "local", "type": "shell", "command": "true"}'
    r = _post(cloud, body, chunked=False, **{"Idempotency-Key": key})
    assert r.status_code == 201, r.text
    assert _post(cloud, body, chunked=False, **{"Idempotency-Key": key}).json()["id"] == r.json()["id"]
    assert served == []


def test_with_fast_create_off_every_create_is_the_routes(make_cloud: Any) -> None:
    c: Cloud = make_cloud(fast_create="false")
    c.agent("local")
    with pytest.MonkeyPatch.context() as mp:
        taken = _count_fast(mp)
        done = c.run(type="shell", command="echo off")
    assert done["status"] == "success" and done["result"] == "off\n"
    assert taken == []
