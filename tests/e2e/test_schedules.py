"""Schedules (issue 20 item 1) through the real cloud and agent, on SQLite and PostgreSQL: saved, listed,
filtered, changed and deleted; refused with a 400 naming the field; fired into tasks the agent runs, with
`cron_source` set; secrets never shown; scoped tokens; and seed 001's `POST/GET /api/tasks`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.harness import AgentClient, Cloud, wait_for

SHELL = {"agent_id": "local", "type": "shell", "command": "echo scheduled"}


def schedule(cloud: Cloud, name: str, cron: str = "0 3 * * *", **fields: Any) -> dict[str, Any]:
    r = cloud.http.post("/api/v1/schedules", json={"name": name, "cron": cron, "task": SHELL, **fields})
    assert r.status_code == 201, r.text
    return dict(r.json())


def get(cloud: Cloud, schedule_id: str) -> dict[str, Any]:
    r = cloud.http.get(f"/api/v1/schedules/{schedule_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def fired(cloud: Cloud, name: str) -> list[dict[str, Any]]:
    """The tasks a schedule created, read from the tasks API (`cron_source` is the schedule's name)."""
    r = cloud.http.get("/api/v1/tasks", params={"page_size": 100})
    return [t for t in r.json()["list"] if t["cron_source"] == name]


@pytest.fixture
def scripted_agent(cloud: Cloud, request: pytest.FixtureRequest) -> Iterator[AgentClient]:
    """A registered agent nobody runs (online since it registered), for firings whose tasks need not run."""
    agent = cloud.scripted(request.node.name, executors=["shell"])
    yield agent
    agent.close()


def test_create_read_list_filter_page_replace_enable_delete(cloud: Cloud) -> None:
    a = schedule(cloud, "nightly backup", timezone="Asia/Shanghai")
    b = schedule(cloud, "hourly report", cron="@hourly", enabled=False)
    assert a["id"].startswith("schedule-") and a["enabled"] and a["created_by"] == "admin"
    assert a["task"]["command"] == "echo scheduled" and a["missed"] == "run_once"
    nxt = datetime.fromisoformat(a["next_run_at"])
    assert nxt.astimezone(UTC).hour == 19 and nxt > datetime.now(UTC)  # 03:00 in Shanghai
    assert b["next_run_at"] is None and get(cloud, b["id"]) == b

    def names(**params: Any) -> list[str]:
        r = cloud.http.get("/api/v1/schedules", params=params)
        assert r.status_code == 200, r.text
        return [s["name"] for s in r.json()["list"]]

    assert {"nightly backup", "hourly report"} <= set(names(page_size=100))
    assert "nightly backup" in names(name="backup") and "hourly report" not in names(name="backup")
    assert "hourly report" in names(enabled="false") and "hourly report" not in names(enabled="true")
    assert "nightly backup" in names(agent_id="local", created_by="admin") and names(agent_id="nobody") == []
    assert names(created_by="someone else") == []
    page = cloud.http.get("/api/v1/schedules", params={"page": 1, "page_size": 1}).json()
    assert len(page["list"]) == 1 and page["total"] >= 2 and page["page_size"] == 1
    assert cloud.http.get("/api/v1/schedules", params={"page_size": 101}).status_code == 400
    refused = cloud.http.get("/api/v1/schedules", params={"pageSize": 3})
    assert refused.status_code == 400 and refused.json()["error"].startswith("pageSize: unknown query parameter")

    body = {"name": "nightly backup", "cron": "30 4 * * *", "task": {**SHELL, "command": "echo v2"}}
    r = cloud.http.put(f"/api/v1/schedules/{a['id']}", json=body)
    assert r.status_code == 200, r.text
    replaced = r.json()
    assert replaced["task"]["command"] == "echo v2" and replaced["timezone"] == "UTC"
    assert datetime.fromisoformat(replaced["next_run_at"]).astimezone(UTC).strftime("%H:%M") == "04:30"
    clash = cloud.http.put(f"/api/v1/schedules/{b['id']}", json=body)
    assert clash.status_code == 409 and clash.json()["error"].startswith("name:")

    off = cloud.http.patch(f"/api/v1/schedules/{a['id']}", json={"enabled": False}).json()
    assert not off["enabled"] and off["next_run_at"] is None
    on = cloud.http.patch(f"/api/v1/schedules/{a['id']}", json={"enabled": True}).json()
    assert on["enabled"] and on["next_run_at"] is not None

    for s in (a, b):
        assert cloud.http.delete(f"/api/v1/schedules/{s['id']}").status_code == 204
        assert cloud.http.get(f"/api/v1/schedules/{s['id']}").status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),  # a valid shape naming no day that comes
        ({"cron": "@reboot"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"missed": "sometimes"}, "missed"),
        ({"start_at": "2030-01-01T03:00:00"}, "start_at"),
        ({"name": "  "}, "name"),
        ({"surprise": 1}, "surprise"),
        ({"task": {**SHELL, "type": "nope"}}, "task.type"),
        ({"task": {**SHELL, "sync": True}}, "task.sync"),
        ({"task": {**SHELL, "request_id": "r1"}}, "task.request_id"),
        ({"task": {**SHELL, "exec_timeout": 0}}, "task.exec_timeout"),
        ({"task": {**SHELL, "params": {"$sealed": "x"}}}, "task.params.$sealed"),
    ],
)
def test_bad_schedules_are_400_naming_the_field(cloud: Cloud, change: dict[str, Any], field: str) -> None:
    body = {"name": "bad", "cron": "@daily", "task": SHELL, **change}
    r = cloud.http.post("/api/v1/schedules", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(f"{field}:"), r.text


def test_the_task_is_checked_as_post_tasks_checks_it(cloud: Cloud) -> None:
    missing = cloud.http.post(
        "/api/v1/schedules", json={"name": "x", "cron": "@daily", "task": {**SHELL, "agent_id": "ghost"}}
    )
    assert missing.status_code == 404 and missing.json()["error"].startswith("task.agent_id:")
    task = {**SHELL, "command": "sudo reboot"}
    refused = cloud.http.post("/api/v1/schedules", json={"name": "x", "cron": "@daily", "task": task})
    assert refused.status_code == 403 and refused.json()["rule"] == "sudo"
    unserved = cloud.http.post(
        "/api/v1/schedules",
        json={"name": "x", "cron": "@daily", "task": {**SHELL, "type": "mysql", "params": {"host": "h"}}},
    )
    assert unserved.status_code in (400, 409), unserved.text
    assert cloud.http.get("/api/v1/schedules", params={"name": "x"}).json()["total"] == 0


def test_a_per_second_schedule_fires_tasks_the_agent_runs_with_cron_source(cloud: Cloud) -> None:
    s = schedule(cloud, "every second", cron="* * * * * *", task={**SHELL, "command": "echo tick"})
    wait_for(lambda: get(cloud, s["id"])["runs"] >= 2, 15, "two firings")
    stopped = cloud.http.patch(f"/api/v1/schedules/{s['id']}", json={"enabled": False}).json()
    tasks = fired(cloud, "every second")
    assert len(tasks) == stopped["runs"] >= 2
    done = cloud.wait_final(stopped["last_task_id"])
    assert done["status"] == "success" and done["result"] == "tick\n" and done["cron_source"] == "every second"
    ticks = sorted(datetime.fromisoformat(t["created_at"]) for t in tasks)
    assert all(later - earlier > timedelta(seconds=0.5) for earlier, later in itertools.pairwise(ticks))
    rpc = cloud.rpc("task_query", token="test-admin-token", condition=[{"cron_source": "every second"}])
    assert len(rpc["result"]) == len(tasks)  # seed 000's query by cron_source finds them too
    cloud.http.delete(f"/api/v1/schedules/{s['id']}")
    assert len(fired(cloud, "every second")) == len(tasks)  # deleting the schedule keeps its tasks


def test_once_fires_one_task_then_disables_itself(cloud: Cloud) -> None:
    s = schedule(cloud, "just once", cron="@once")
    done = wait_for(lambda: (g := get(cloud, s["id"]))["runs"] == 1 and not g["enabled"] and g, 15, "the firing")
    assert done["next_run_at"] is None and done["last_error"] == ""
    task = cloud.wait_final(done["last_task_id"])
    assert task["status"] == "success" and task["cron_source"] == "just once"
    assert len(fired(cloud, "just once")) == 1


def test_secrets_in_the_template_are_stored_sealed_and_shown_masked(cloud: Cloud) -> None:
    task = {
        **SHELL,
        "command": "deploy --password=Sw0rdfish-9",
        "params": {"api_key": "k-123456"},
        "env": {"DB_PASSWORD": "pw-7654321"},
    }
    s = schedule(cloud, "with secrets", task=task)
    listed = cloud.http.get("/api/v1/schedules", params={"name": "with secrets"}).json()["list"][0]
    seed = cloud.http.get("/api/tasks", params={"name": "with secrets"}).json()["list"][0]
    for shown in (s, get(cloud, s["id"]), listed):
        text = str(shown)
        assert "Sw0rdfish-9" not in text and "k-123456" not in text and "pw-7654321" not in text, text
        assert shown["task"]["params"]["api_key"] == "******" and shown["task"]["env"]["DB_PASSWORD"] == "******"
    assert "Sw0rdfish-9" not in seed["command"]
    [(stored,)] = cloud.sql(f"SELECT template FROM schedules WHERE id = {s['id'].removeprefix('schedule-')}")
    assert "k-123456" not in str(stored) and "pw-7654321" not in str(stored) and "$sealed" in str(stored)
    cloud.http.delete(f"/api/v1/schedules/{s['id']}")


def test_a_disabled_or_deleted_agent_is_recorded_as_last_error(cloud: Cloud, scripted_agent: AgentClient) -> None:
    agent_id = scripted_agent.headers["X-Agent-Id"]
    s = schedule(cloud, f"on {agent_id}", cron="* * * * * *", task={**SHELL, "agent_id": agent_id})
    wait_for(lambda: get(cloud, s["id"])["runs"] >= 1, 15, "a firing")
    assert cloud.http.patch(f"/api/v1/agents/{agent_id}", json={"disabled": True}).status_code == 200
    wait_for(lambda: "is disabled" in get(cloud, s["id"])["last_error"], 15, "the disabled agent recorded")
    assert cloud.http.delete(f"/api/v1/agents/{agent_id}").status_code in (200, 204)
    wait_for(lambda: "agent not found" in get(cloud, s["id"])["last_error"], 15, "the deleted agent recorded")
    still = get(cloud, s["id"])
    assert still["enabled"] and still["next_run_at"] is not None  # the schedule and the loop go on
    other = schedule(cloud, "after the errors", cron="@once")
    wait_for(lambda: get(cloud, other["id"])["runs"] == 1, 15, "another schedule firing meanwhile")
    cloud.http.delete(f"/api/v1/schedules/{s['id']}")


def test_scoped_tokens_schedule_only_where_they_reach_and_firings_stop_when_revoked(cloud: Cloud) -> None:
    def token(**body: Any) -> dict[str, Any]:
        r = cloud.http.post("/api/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    elsewhere = token(name="web only", agents=["web-*"], types=["shell"], can=["schedule", "read"])
    tasks_only = token(name="tasks only", agents=["*"], types=["shell"], can=["create", "read"])
    scheduler = token(name="scheduler", agents=["local"], types=["shell"], can=["schedule", "read"])
    body = {"name": "scoped", "cron": "* * * * * *", "task": SHELL}
    for t in (elsewhere, tasks_only):
        with httpx.Client(base_url=cloud.url, headers={"Authorization": f"Bearer {t['token']}"}) as c:
            r = c.post("/api/v1/schedules", json=body)
            assert r.status_code == 403, r.text
    with httpx.Client(base_url=cloud.url, headers={"Authorization": f"Bearer {scheduler['token']}"}) as c:
        r = c.post("/api/v1/schedules", json=body)
        assert r.status_code == 201, r.text
        s = r.json()
        assert s["created_by"] == "scheduler"
        assert [x["name"] for x in c.get("/api/v1/schedules", params={"created_by": "scheduler"}).json()["list"]] == [
            "scoped"
        ]
    with httpx.Client(base_url=cloud.url, headers={"Authorization": f"Bearer {elsewhere['token']}"}) as c:
        assert c.get("/api/v1/schedules", params={"name": "scoped"}).json()["total"] == 0
        assert c.get(f"/api/v1/schedules/{s['id']}").status_code == 403
    wait_for(lambda: get(cloud, s["id"])["runs"] >= 1, 15, "a firing")
    assert cloud.http.delete(f"/api/v1/tokens/{scheduler['id']}").status_code == 204
    wait_for(lambda: "was deleted" in get(cloud, s["id"])["last_error"], 15, "the revoked token recorded")
    runs = get(cloud, s["id"])["runs"]
    cloud.http.patch(f"/api/v1/schedules/{s['id']}", json={"enabled": False})
    assert len(fired(cloud, "scoped")) == runs
    cloud.http.delete(f"/api/v1/schedules/{s['id']}")


def test_seed_001_post_and_get_api_tasks(cloud: Cloud) -> None:
    agent = cloud.scripted("7", executors=["shell"])  # seed 001's server 7 is agent "7"
    try:
        body = {"name": "磁盘检查", "command": "df -h", "server_id": 7, "cron_expr": "@once"}
        r = cloud.http.post("/api/tasks", json=body)
        assert r.status_code == 200, r.text
        item = r.json()
        assert item["server_id"] == 7 and item["status"] == 1 and item["command"] == "df -h"
        assert isinstance(item["id"], int) and item["cron_expr"] == "@once"
        done = wait_for(lambda: (g := get(cloud, f"schedule-{item['id']}"))["runs"] == 1 and g, 15, "the firing")
        task = cloud.task(done["last_task_id"])
        assert task["agent_id"] == "7" and task["type"] == "shell" and task["cron_source"] == "磁盘检查"
        listed = cloud.http.get("/api/tasks", params={"server_id": 7, "page": 1, "page_size": 10}).json()
        assert set(listed) == {"list", "total", "page", "page_size"} and listed["total"] == 1
        [row] = listed["list"]
        assert row["name"] == "磁盘检查" and row["status"] == 0 and row["last_run"] and row["next_run"] is None
        assert cloud.http.get("/api/tasks", params={"status": 1, "server_id": 7}).json()["total"] == 0
        bad = cloud.http.post("/api/tasks", json={**body, "cron_expr": "every day"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("cron_expr:")
        missing = cloud.http.post("/api/tasks", json={**body, "name": "n2", "server_id": 99999})
        assert missing.status_code == 404
        assert cloud.http.get("/api/tasks", params={"nodeId": 1}).status_code == 400
    finally:
        agent.close()
