"""Seed 004's remaining routes (file download and distribute, agent status, agent PUT) and seed 003's list
parameters, over the real cloud and agent: honoured, or refused with a 400 that names them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast

from tests.e2e.harness import Cloud, wait_for

CLOUD_SETTINGS = {"max_distribute_agents": 2}


def _upload(cloud: Cloud, name: str, content: bytes) -> dict[str, str]:
    r = cloud.http.post("/api/v1/files", files={"file": (name, content)})
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def test_task_list_takes_seed_003_names_and_refuses_unknown_ones(cloud: Cloud) -> None:
    for _ in range(4):
        cloud.run(type="shell", command="true")
    assert len(cloud.http.get("/api/v1/tasks", params={"pageSize": 3}).json()["list"]) == 3
    page = cloud.http.get("/api/v1/tasks", params={"page": 2, "pageSize": 3}).json()
    assert page["page"] == 2 and page["page_size"] == 3
    assert cloud.http.get("/api/v1/tasks", params={"nodeId": "nobody"}).json()["total"] == 0
    assert cloud.http.get("/api/v1/tasks", params={"nodeId": "local"}).json()["total"] >= 4
    for params, named in (({"name": "x"}, "name"), ({"colour": "red", "page": 1}, "colour")):
        r = cloud.http.get("/api/v1/tasks", params=cast("dict[str, str | int]", params))
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith(f"{named}: unknown query parameter") and "page_size" in r.json()["error"]
    both = cloud.http.get("/api/v1/tasks", params={"page_size": 5, "pageSize": 3})
    assert both.status_code == 400 and "pageSize" in both.json()["error"]
    assert cloud.http.get("/api/v1/tasks", params={"pageSize": 500}).status_code == 400
    # Every route refuses what it does not take, not only the task list.
    r = cloud.http.get("/api/v1/agents", params={"page": 1})
    assert r.status_code == 400 and r.json()["error"] == "page: unknown query parameter; this route takes none"


def test_file_download_route_and_distribute(cloud: Cloud, tmp_path: Path) -> None:
    content = b"release 1.2.3\n" * 100
    rec = _upload(cloud, "release.txt", content)
    got = cloud.http.get(f"/api/v1/files/{rec['id']}/download")
    assert got.status_code == 200 and got.content == content and got.headers["etag"] == f'"{rec["md5"]}"'
    assert "release.txt" in got.headers["content-disposition"]
    assert cloud.http.get("/api/v1/files/file-999999/download").status_code == 404

    dest = tmp_path / "placed" / "release.txt"
    r = cloud.http.post(
        f"/api/v1/files/{rec['id']}/distribute", json={"agent_ids": ["local"], "params": {"path": str(dest)}}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["file_id"] == rec["id"] and [t["agent_id"] for t in body["tasks"]] == ["local"]
    task = body["tasks"][0]
    assert task["type"] == "file" and task["file_id"] == rec["id"]
    assert cloud.wait_final(task["id"])["status"] == "success"
    assert hashlib.md5(dest.read_bytes()).hexdigest() == rec["md5"]


def test_distribute_is_all_or_nothing_and_names_the_agent(cloud: Cloud, tmp_path: Path) -> None:
    rec = _upload(cloud, "conf.ini", b"[a]\nb=1\n")
    before = cloud.http.get("/api/v1/tasks", params={"type": "file"}).json()["total"]
    url = f"/api/v1/files/{rec['id']}/distribute"
    dest = {"path": str(tmp_path / "conf.ini")}
    unknown = cloud.http.post(url, json={"agent_ids": ["local", "ghost"], "params": dest})
    assert unknown.status_code == 404 and unknown.json()["error"].startswith("agent_ids[1] (ghost): ")
    assert cloud.http.get("/api/v1/tasks", params={"type": "file"}).json()["total"] == before  # none created
    twice = cloud.http.post(url, json={"agent_ids": ["local", "local"], "params": dest})
    assert twice.status_code == 400 and "more than once" in twice.json()["error"]
    bad_id = cloud.http.post(url, json={"agent_ids": [""], "params": dest})
    assert bad_id.status_code == 400 and bad_id.json()["error"].startswith("agent_ids[0]: ")
    no_path = cloud.http.post(url, json={"agent_ids": ["local"], "params": {}})
    assert no_path.status_code == 400 and "params.path" in no_path.json()["error"]
    many = cloud.http.post(url, json={"agent_ids": ["local", "a", "b"], "params": dest})
    assert many.status_code == 400 and "at most 2" in many.json()["error"]
    empty = cloud.http.post(url, json={"agent_ids": [], "params": dest})
    assert empty.status_code == 400 and "agent_ids" in empty.json()["error"]
    missing = cloud.http.post("/api/v1/files/file-999999/distribute", json={"agent_ids": ["local"], "params": dest})
    assert missing.status_code == 404


def test_agent_status_and_put(cloud: Cloud) -> None:
    running = cloud.create(type="shell", command="sleep 30").json()
    try:
        wait_for(lambda: cloud.task(running["id"])["status"] == "running", 30, "task running")
        status = cloud.http.get("/api/v1/agents/local/status").json()
        assert status["id"] == "local" and status["status"] == "online" and status["disabled"] is False
        assert status["running"] >= 1 and status["pending"] >= 0 and status["max_concurrency"] == 4
        assert 0 <= status["seconds_since_seen"] < 60
    finally:
        cloud.http.post(f"/api/v1/tasks/{running['id']}/cancel")
    assert cloud.http.get("/api/v1/agents/ghost/status").status_code == 404

    off = cloud.http.put("/api/v1/agents/local", json={"disabled": True})
    assert off.status_code == 200 and off.json()["disabled"] is True
    try:
        refused = cloud.create(type="shell", command="true")
        assert refused.status_code == 409 and "disabled" in refused.json()["error"]
    finally:
        assert cloud.http.put("/api/v1/agents/local", json={"disabled": False}).json()["disabled"] is False
    partial = cloud.http.put("/api/v1/agents/local", json={})
    assert partial.status_code == 400 and "disabled" in partial.json()["error"]
    other = cloud.http.put("/api/v1/agents/local", json={"disabled": False, "labels": {"a": "b"}})
    assert other.status_code == 400 and "labels" in other.json()["error"]
