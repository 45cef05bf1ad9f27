"""Idempotency keys (`request_id` / `Idempotency-Key`): a repeat returns the task, a different body is 409."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.harness import ADMIN, Cloud


def _key() -> str:
    return f"key-{uuid.uuid4().hex[:12]}"


def _total(cloud: Cloud, marker: str) -> int:
    return int(cloud.http.get("/api/v1/tasks", params={"q": marker, "page_size": 100}).json()["total"])


def test_same_key_different_body_is_409_naming_the_key(cloud: Cloud) -> None:
    key = _key()
    first = cloud.create(type="shell", command=f"echo first {key}", request_id=key)
    assert first.status_code == 201, first.text
    other = cloud.create(type="shell", command=f"echo second {key}", request_id=key)
    assert other.status_code == 409, other.text
    body = other.json()
    assert "request_id" in body["error"] and key in body["error"] and body["task_id"] == first.json()["id"]
    assert _total(cloud, f"echo second {key}") == 0  # the second body was not stored either
    assert cloud.task(first.json()["id"])["command"] == f"echo first {key}"


def test_same_key_same_body_returns_the_task_whatever_the_wait(cloud: Cloud) -> None:
    key = _key()
    body = {"type": "shell", "command": f"echo same {key}", "request_id": key, "max_retries": 2}
    first = cloud.create(**body)
    assert first.status_code == 201, first.text
    # The wait options only shape the answer; fields given at their default are the same request.
    again = cloud.create(**body, sync=True, timeout=30, retry_on="lost", env={})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "success"
    assert _total(cloud, f"echo same {key}") == 1


def test_every_task_field_counts(cloud: Cloud) -> None:
    key = _key()
    base: dict[str, Any] = {"type": "shell", "command": f"true {key}", "request_id": key}
    assert cloud.create(**base).status_code == 201
    for change in (
        {"agent_id": "elsewhere"},
        {"type": "python"},
        {"env": {"A": "1"}},
        {"params": {"shell": "/bin/sh"}},
        {"exec_timeout": 99},
        {"max_retries": 1},
        {"retry_backoff": 1.5},
        {"retry_on": "any"},
        {"expires_in": 60},
        {"file_id": "file-1"},
    ):
        r = cloud.create(**{**base, **change})
        assert r.status_code == 409, (change, r.text)


def test_a_different_secret_is_a_different_request(cloud: Cloud) -> None:
    """Secrets are stored sealed and enter the fingerprint only as a placeholder, yet still count."""
    key = _key()
    body: dict[str, Any] = {"type": "shell", "command": f"true {key}", "request_id": key, "env": {"DB_PASSWORD": "a1"}}
    assert cloud.create(**body).status_code == 201
    assert cloud.create(**body).status_code == 200
    changed = cloud.create(**{**body, "env": {"DB_PASSWORD": "b2"}})
    assert changed.status_code == 409, changed.text
    (print_,) = cloud.sql(f"SELECT request_fingerprint FROM tasks WHERE request_id = '{key}'")[0]
    assert isinstance(print_, str) and len(print_) == 64


def test_header_key_behaves_the_same_and_is_named(cloud: Cloud) -> None:
    key = _key()
    task = {"agent_id": "local", "type": "shell", "command": f"echo hdr {key}"}
    first = cloud.http.post("/api/v1/tasks", json=task, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    repeat = cloud.http.post("/api/v1/tasks", json=task, headers={"Idempotency-Key": key})
    assert repeat.status_code == 200 and repeat.json()["id"] == first.json()["id"]
    both_same = cloud.http.post("/api/v1/tasks", json={**task, "request_id": key}, headers={"Idempotency-Key": key})
    assert both_same.status_code == 200 and both_same.json()["id"] == first.json()["id"]
    other = cloud.http.post(
        "/api/v1/tasks", json={**task, "command": f"echo other {key}"}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"] and key in other.json()["error"]


def test_header_and_request_id_disagreeing_is_400(cloud: Cloud) -> None:
    a, b = _key(), _key()
    r = cloud.http.post(
        "/api/v1/tasks",
        json={"agent_id": "local", "type": "shell", "command": f"echo {a}", "request_id": a},
        headers={"Idempotency-Key": b},
    )
    assert r.status_code == 400, r.text
    assert "Idempotency-Key" in r.json()["error"] and "request_id" in r.json()["error"]
    assert a in r.json()["error"] and b in r.json()["error"]
    assert _total(cloud, f"echo {a}") == 0


def test_task_without_fingerprint_still_matches(cloud: Cloud) -> None:
    """A task created before migration 0004 has no fingerprint: its key keeps returning it, as it did."""
    key = _key()
    first = cloud.create(type="shell", command=f"true {key}", request_id=key)
    assert first.status_code == 201
    _execute(cloud, f"UPDATE tasks SET request_fingerprint = NULL WHERE request_id = '{key}'")
    again = cloud.create(type="shell", command=f"echo other {key}", request_id=key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def _execute(cloud: Cloud, statement: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(cloud.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def _race(targets: list[Cloud], bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST bodies[i] to targets[i] at once, each on its own open connection, released by one barrier."""
    barrier = threading.Barrier(len(bodies))
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def send(i: int) -> None:
        with httpx.Client(base_url=targets[i].url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as http:
            http.get("/healthz")  # connected before the barrier, so both requests leave together
            barrier.wait()
            answers[i] = http.post("/api/v1/tasks", json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [a for a in answers if a is not None]


def test_racing_creates_with_one_key(cloud: Cloud, tmp_path: Path) -> None:
    """Two replicas on one database, each asked at the same moment: one creates, the other answers by
    comparing with the task the first stored (a secret included, so it is unsealed across replicas)."""
    key_file = cloud.data_dir / "secret.key"
    env = {**cloud.env, "TIANGONG_DATABASE_URL": cloud.database_url, "TIANGONG_SECRET_KEY": key_file.read_text()}
    replica = Cloud(tmp_path / "replica", env).start()
    try:
        for _ in range(5):
            key = _key()
            task = {"agent_id": "local", "type": "shell", "request_id": key, "env": {"API_TOKEN": "s3"}}
            bodies = [{**task, "command": f"echo a {key}"}, {**task, "command": f"echo b {key}"}]
            different = _race([cloud, replica], bodies)
            assert sorted(r.status_code for r in different) == [201, 409], [r.text for r in different]
            assert _total(cloud, key) == 1
            key = _key()
            same = {**task, "request_id": key, "command": f"echo s {key}"}
            both = _race([cloud, replica], [same, same])
            assert sorted(r.status_code for r in both) == [200, 201], [r.text for r in both]
            assert both[0].json()["id"] == both[1].json()["id"] and _total(cloud, key) == 1
    finally:
        replica.close()
