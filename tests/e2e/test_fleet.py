"""Fleet runs (issue 20 item 3) through the real cloud and five real agent processes with labels, on SQLite
and PostgreSQL: targets chosen by ids, globs and labels; never more than max_concurrency at once; launching
stopped by max_errors; the aggregate and per-agent results; cancel; scoped tokens; bad input named."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.cli_run import cli, one_json, one_line_error
from tests.e2e.harness import ADMIN, Cloud, peak, wait_for

WEB = ["fleet-web-1", "fleet-web-2", "fleet-web-3"]
DB = ["fleet-db-1", "fleet-db-2"]
"""The db agents run with FLEET_FAIL=1 in their environment: `[ -z "$FLEET_FAIL" ]` fails on them only."""
ALL = sorted(DB + WEB)
FAIL_ON_DB = '[ -z "$FLEET_FAIL" ]'


@pytest.fixture(scope="module")
def fleet(cloud: Cloud) -> Iterator[Cloud]:
    """The module's cloud with five more agent processes: three `role=web`, two `role=db`."""
    for agent_id in ALL:
        role = "db" if agent_id in DB else "web"
        env = {"TIANGONG_LABELS": json.dumps({"role": role, "fleet": "yes"})}
        if role == "db":
            env["FLEET_FAIL"] = "1"
        cloud.agent(agent_id, max_concurrency=2, wait_online=False, **env)

    def online() -> bool:
        agents = cloud.http.get("/api/v1/agents").json()
        return {a["id"] for a in agents if a["status"] == "online"} >= set(ALL)

    wait_for(online, 60, "the fleet agents online")
    yield cloud


def run(cloud: Cloud, http: httpx.Client | None = None, **body: Any) -> httpx.Response:
    body.setdefault("type", "shell")
    body.setdefault("command", "echo ok")
    return (http or cloud.http).post("/api/v1/tasks", json=body)


def run_sync(cloud: Cloud, **body: Any) -> dict[str, Any]:
    r = run(cloud, sync=True, timeout=120, **body)
    assert r.status_code == 201, r.text
    task = dict(r.json())
    assert not task["sync_timed_out"], task
    return task


def targets(task: dict[str, Any]) -> list[str]:
    return [t["agent_id"] for t in task["fleet"]["results"]]


def children(cloud: Cloud, parent_id: str) -> list[dict[str, Any]]:
    r = cloud.http.get("/api/v1/tasks", params={"parent_id": parent_id, "page_size": 100})
    assert r.status_code == 200, r.text
    return list(r.json()["list"])


def most_at_once(tasks: list[dict[str, Any]]) -> int:
    """The most children alive (created, not yet finished) at any one instant."""
    edges = []
    for t in tasks:
        edges.append((datetime.fromisoformat(t["created_at"]), 1))
        edges.append((datetime.fromisoformat(t["finished_at"]), -1))
    return peak(edges)


def test_selector_by_ids_globs_labels_and_all_succeed(fleet: Cloud) -> None:
    by_ids = run_sync(fleet, agent_selector={"ids": ["fleet-web-2", "fleet-db-1", "fleet-web-2"]}, command="echo hi")
    assert targets(by_ids) == ["fleet-db-1", "fleet-web-2"]  # named twice is one target
    by_glob = run_sync(fleet, agent_selector={"globs": ["fleet-web-*"]}, command="echo hi")
    assert targets(by_glob) == WEB
    by_label = run_sync(fleet, agent_selector={"labels": {"role": "db"}}, command="echo hi")
    assert targets(by_label) == DB
    # ids and globs are a union; labels narrow it.
    mixed = run_sync(
        fleet, agent_selector={"ids": ["fleet-db-2", "local"], "globs": ["fleet-web-[12]"], "labels": {"fleet": "yes"}}
    )
    assert targets(mixed) == ["fleet-db-2", "fleet-web-1", "fleet-web-2"]

    assert by_glob["id"].startswith("task-") and by_glob["agent_id"] == "*" and by_glob["parent_id"] is None
    assert by_glob["status"] == "success" and by_glob["result"] == "3 of 3 agent(s) succeeded"
    summary = by_glob["fleet"]
    assert summary["outcome"] == "success" and summary["targets"] == 3 and summary["concurrency"] == 50
    assert summary["counts"]["success"] == 3 and summary["counts"]["not_run"] == 0 and summary["counts"]["errors"] == 0
    for result in summary["results"]:
        assert result["status"] == "success" and result["exit_code"] == 0 and result["task_id"].startswith("task-")
        child = fleet.task(result["task_id"])
        assert child["parent_id"] == by_glob["id"] and child["agent_id"] == result["agent_id"]
        assert child["result"] == "hi\n" and child["fleet"] is None
    assert fleet.task(by_glob["id"])["fleet"] == summary  # GET shows the same aggregate


def test_never_more_than_max_concurrency_at_once(fleet: Cloud) -> None:
    parent = run_sync(fleet, agent_selector={"globs": ["fleet-*"]}, command="sleep 0.4", max_concurrency="40%")
    assert parent["status"] == "success" and parent["fleet"]["concurrency"] == 2  # 40% of 5
    kids = children(fleet, parent["id"])
    assert sorted(k["agent_id"] for k in kids) == ALL
    assert most_at_once(kids) == 2  # never 3, and the limit was used


def test_max_errors_stops_launching_and_the_run_fails(fleet: Cloud) -> None:
    # Targets start in id order: both db agents (which fail) come first; the second error passes max_errors 1.
    parent = run_sync(
        fleet, agent_selector={"labels": {"fleet": "yes"}}, command=FAIL_ON_DB, max_concurrency=1, max_errors=1
    )
    assert parent["status"] == "failed" and parent["fleet"]["outcome"] == "failed"
    counts = parent["fleet"]["counts"]
    assert (counts["failed"], counts["errors"], counts["not_run"], counts["success"]) == (2, 2, 3, 0)
    assert [r["status"] for r in parent["fleet"]["results"]] == ["failed", "failed", "not_run", "not_run", "not_run"]
    assert [r["exit_code"] for r in parent["fleet"]["results"][:2]] == [1, 1]
    assert "more than max_errors allows (1): 3 target(s) not run" in parent["error"]
    assert len(children(fleet, parent["id"])) == 2  # the web agents were never started

    # Within max_errors every target runs; the run ends failed, its outcome `incomplete`.
    tolerant = run_sync(fleet, agent_selector={"globs": ["fleet-*"]}, command=FAIL_ON_DB, max_errors="40%")
    assert tolerant["status"] == "failed" and tolerant["fleet"]["outcome"] == "incomplete"
    assert tolerant["fleet"]["counts"]["success"] == 3 and tolerant["fleet"]["counts"]["errors"] == 2


def test_cancel_the_parent_cancels_children_and_starts_no_more(fleet: Cloud) -> None:
    r = run(fleet, agent_selector={"globs": ["fleet-web-*"]}, command="sleep 60", max_concurrency=1)
    assert r.status_code == 201, r.text
    parent = r.json()
    assert parent["status"] == "running" and parent["attempts"] == 1
    first = parent["fleet"]["results"][0]
    wait_for(lambda: fleet.task(first["task_id"])["status"] == "running", 30, "the first child running")
    canceled = fleet.http.post(f"/api/v1/tasks/{parent['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled" and canceled.json()["fleet"]["outcome"] == "canceled"
    assert fleet.wait_final(first["task_id"])["status"] == "canceled"
    after = fleet.task(parent["id"])
    assert [t["status"] for t in after["fleet"]["results"]] == ["canceled", "not_run", "not_run"]
    assert len(children(fleet, parent["id"])) == 1
    assert fleet.http.post(f"/api/v1/tasks/{parent['id']}/cancel").status_code == 409


def test_an_undeliverable_target_is_no_error_but_no_success(fleet: Cloud) -> None:
    off = fleet.scripted("fleet-off", executors=["shell"])
    try:
        assert fleet.http.patch("/api/v1/agents/fleet-off", json={"disabled": True}).status_code == 200
        parent = run_sync(fleet, agent_selector={"ids": ["fleet-off", "fleet-web-1"]}, max_errors=0)
    finally:
        off.close()
        assert fleet.http.delete("/api/v1/agents/fleet-off").status_code in (200, 204)
    assert parent["status"] == "failed" and parent["fleet"]["outcome"] == "incomplete"
    by_agent = {t["agent_id"]: t for t in parent["fleet"]["results"]}
    assert by_agent["fleet-off"]["status"] == "failed" and by_agent["fleet-web-1"]["status"] == "success"
    assert by_agent["fleet-off"]["error"] == "not delivered: agent fleet-off is disabled"
    assert parent["fleet"]["counts"]["errors"] == 0  # as SSM's undeliverable targets: max_errors 0 went on


def test_list_children_filter_retry_and_delete(fleet: Cloud) -> None:
    parent = run_sync(fleet, agent_selector={"labels": {"role": "db"}}, command="echo listed")
    kids = children(fleet, parent["id"])
    assert {k["agent_id"] for k in kids} == set(DB) and {k["parent_id"] for k in kids} == {parent["id"]}
    page = fleet.http.get("/api/v1/tasks", params={"page_size": 100}).json()["list"]
    ids = {t["id"] for t in page}
    assert parent["id"] in ids and not ids & {k["id"] for k in kids}  # runs, not their children, by default
    assert page[[t["id"] for t in page].index(parent["id"])]["fleet"]["outcome"] == "success"
    on_agent = fleet.http.get("/api/v1/tasks", params={"agent_id": "fleet-db-1", "page_size": 100}).json()["list"]
    assert {k["id"] for k in kids if k["agent_id"] == "fleet-db-1"} <= {t["id"] for t in on_agent}
    everything = fleet.http.get("/api/v1/tasks", params={"children": "true", "page_size": 100}).json()["list"]
    assert {k["id"] for k in kids} <= {t["id"] for t in everything}
    assert fleet.http.get("/api/v1/tasks", params={"parent_id": "nope"}).json()["error"].startswith("parent_id:")

    retried = fleet.http.post(f"/api/v1/tasks/{parent['id']}/retry")
    assert retried.status_code == 409 and "fleet run" in retried.json()["error"]
    assert fleet.http.delete(f"/api/v1/tasks/{parent['id']}").status_code == 204
    for k in kids:  # its children go with it
        assert fleet.http.get(f"/api/v1/tasks/{k['id']}").status_code == 404


def test_a_scoped_token_never_targets_an_agent_it_does_not_reach(fleet: Cloud) -> None:
    body = {"name": "web-ci", "agents": ["fleet-web-*"], "types": ["shell"], "can": ["create", "read", "cancel"]}
    made = fleet.http.post("/api/v1/tokens", json=body)
    assert made.status_code == 201, made.text
    with httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {made.json()['token']}"}) as web:
        r = run(fleet, web, agent_selector={"globs": ["fleet-*"]}, sync=True, timeout=60)
        assert r.status_code == 201, r.text
        assert targets(r.json()) == WEB  # the db agents match the glob but are out of reach
        assert web.get(f"/api/v1/tasks/{r.json()['id']}").status_code == 200
        named = run(fleet, web, agent_selector={"ids": ["fleet-web-1", "fleet-db-1"]})
        assert named.status_code == 403 and named.json()["error"].startswith("agent_selector.ids[1]:")
        nothing = run(fleet, web, agent_selector={"labels": {"role": "db"}})
        assert nothing.status_code == 404 and nothing.json()["error"].startswith("agent_selector:")
        # A run of the admin's over the db agents is not this token's to read or cancel.
        other = run(fleet, agent_selector={"labels": {"role": "db"}})
        assert other.status_code == 201, other.text
        assert web.get(f"/api/v1/tasks/{other.json()['id']}").status_code == 403
        assert web.post(f"/api/v1/tasks/{other.json()['id']}/cancel").status_code == 403
        fleet.wait_final(other.json()["id"])


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"agent_id": "local", "agent_selector": {"ids": ["fleet-web-1"]}}, 400, "agent_id and agent_selector"),
        ({}, 400, "agent_id"),
        ({"agent_selector": {}}, 400, "agent_selector"),
        ({"agent_selector": {"ids": ["fleet-*"]}}, 400, "agent_selector.ids"),
        ({"agent_selector": {"nodes": ["x"]}}, 400, "agent_selector.nodes"),
        ({"agent_selector": {"globs": ["fleet-*"]}, "max_concurrency": "0%"}, 400, "max_concurrency"),
        ({"agent_selector": {"globs": ["fleet-*"]}, "max_concurrency": 0}, 400, "max_concurrency"),
        ({"agent_selector": {"globs": ["fleet-*"]}, "max_concurrency": "lots"}, 400, "max_concurrency"),
        ({"agent_selector": {"globs": ["fleet-*"]}, "max_concurrency": True}, 400, "max_concurrency"),
        ({"agent_selector": {"globs": ["fleet-*"]}, "max_errors": "101%"}, 400, "max_errors"),
        ({"agent_selector": {"globs": ["fleet-*"]}, "max_errors": -1}, 400, "max_errors"),
        ({"agent_id": "local", "max_errors": 1}, 400, "max_errors"),
        ({"agent_selector": {"ids": ["no-such-agent"]}}, 404, "agent_selector.ids[0]"),
        ({"agent_selector": {"globs": ["no-such-*"]}}, 404, "agent_selector"),
        ({"agent_selector": {"globs": ["fleet-*"]}, "type": "no-such-type"}, 400, "no-such-type"),
        ({"agent_selector": {"globs": ["fleet-*"]}, "type": "web_shell"}, 400, "type: web_shell is one interactive"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(fleet: Cloud, body: dict[str, Any], status: int, names: str) -> None:
    def stored() -> int:
        return int(fleet.http.get("/api/v1/tasks", params={"children": "true"}).json()["total"])

    before = stored()
    r = run(fleet, **body)
    assert r.status_code == status, r.text
    assert names in r.json()["error"]
    assert stored() == before  # nothing of it was kept


def test_fleet_max_targets_is_a_setting(make_cloud: Callable[..., Cloud]) -> None:
    small = make_cloud(fleet_max_targets="1")
    agents = [small.scripted(f"cap-{i}", executors=["shell"]) for i in range(2)]
    try:
        r = run(small, agent_selector={"globs": ["cap-*"]})
        assert r.status_code == 400 and r.json()["error"].startswith("agent_selector: matches 2 agents; at most 1")
        assert run(small, agent_selector={"ids": ["cap-0"]}).status_code == 201
    finally:
        for a in agents:
            a.close()


def test_a_schedule_cannot_hold_a_fleet_run(fleet: Cloud) -> None:
    task = {"agent_selector": {"globs": ["fleet-*"]}, "type": "shell", "command": "echo no"}
    r = fleet.http.post("/api/v1/schedules", json={"name": "fleet nightly", "cron": "@daily", "task": task})
    assert r.status_code == 400 and r.json()["error"].startswith("task.agent_selector:"), r.text


def test_the_cli_runs_a_fleet_and_exits_with_its_outcome(fleet: Cloud) -> None:
    ok = cli(fleet.url, ADMIN, "task", "fleet", "echo from-cli", "--glob", "fleet-web-*", "--max-concurrency", "2")
    assert ok.returncode == 0, ok.stderr
    assert " created on 3 agent(s), up to 2 at once" in ok.stderr.splitlines()[0]
    rows = [line.split() for line in ok.stdout.splitlines() if line.startswith("fleet-web-")]
    assert [(r[0], r[1], r[2]) for r in rows] == [(a, "success", "0") for a in WEB]
    run_id = ok.stderr.split()[0]
    assert f"{run_id} outcome success: 3 success" in ok.stdout

    args = ("--glob", "fleet-*", "--label", "role=db", "--max-concurrency", "1", "--json")
    failed = cli(fleet.url, ADMIN, "task", "fleet", FAIL_ON_DB, *args)
    assert failed.returncode == 10, failed.stderr  # the code of a failed task
    document = one_json(failed.stdout)
    assert document["status"] == "failed" and document["fleet"]["outcome"] == "failed"
    assert {r["agent_id"]: r["status"] for r in document["fleet"]["results"]} == {
        "fleet-db-1": "failed",
        "fleet-db-2": "not_run",  # max_errors 0 (the default): nothing starts after the first error
    }

    shown = cli(fleet.url, ADMIN, "task", "get", run_id)
    assert shown.returncode == 0 and re.search(r"^agent_id: +\*$", shown.stdout, re.M) and "fleet-web-3" in shown.stdout
    listed = cli(fleet.url, ADMIN, "task", "list", "--parent", run_id, "--json")
    assert sorted(t["agent_id"] for t in one_json(listed.stdout)["list"]) == WEB

    nothing = cli(fleet.url, ADMIN, "task", "fleet", "echo no")
    assert nothing.returncode == 2 and "--glob" in one_line_error(nothing)
