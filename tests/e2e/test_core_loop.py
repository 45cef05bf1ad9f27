"""The core loop end to end: a real cloud, a real agent process, real commands."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.e2e.harness import ADMIN, Cloud, wait_for


def _procs_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = next((ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if marker in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found


def test_sync_shell_returns_stdout(cloud: Cloud) -> None:
    r = cloud.create(type="shell", command="echo hello", sync=True, timeout=30)
    assert r.status_code == 201
    task = r.json()
    assert task["status"] == "success"
    assert task["result"] == "hello\n"
    assert task["exit_code"] == 0
    assert task["id"].startswith("task-")
    assert task["started_at"] and task["finished_at"]


def test_async_then_poll(cloud: Cloud) -> None:
    r = cloud.create(type="shell", command="echo one; echo two")
    assert r.status_code == 201
    created = r.json()
    assert created["status"] in ("pending", "running")
    done = cloud.wait_final(created["id"])
    assert done["status"] == "success"
    assert done["result"] == "one\ntwo\n"


def test_python_and_execute_types(cloud: Cloud) -> None:
    py = cloud.run(type="python", command="import sys\nprint(sys.version_info[0])")
    assert (py["status"], py["result"]) == ("success", "3\n")
    ex = cloud.run(type="execute", params={"cmd": "printf", "args": ["%s|", "a b", "$HOME"]})
    assert (ex["status"], ex["result"]) == ("success", "a b|$HOME|")


def test_env_reaches_the_command(cloud: Cloud) -> None:
    task = cloud.run(type="shell", command='echo "$GREETING"', env={"GREETING": "ni hao"})
    assert task["result"] == "ni hao\n"


def test_stdout_and_stderr_stay_apart_in_order(cloud: Cloud) -> None:
    task = cloud.run(type="shell", command="for i in 1 2 3; do echo out$i; echo err$i >&2; done")
    lines = cloud.logs(task["id"])
    out = [ln["message"] for ln in lines if ln["stream"] == "stdout"]
    err = [ln["message"] for ln in lines if ln["stream"] == "stderr"]
    assert out == ["out1", "out2", "out3"]
    assert err == ["err1", "err2", "err3"]
    assert all(ln["level"] == "warn" for ln in lines if ln["stream"] == "stderr")
    assert [ln["id"] for ln in lines] == sorted(ln["id"] for ln in lines)
    assert task["result"] == "out1\nout2\nout3\n"


def test_nonzero_exit_fails_with_exit_code(cloud: Cloud) -> None:
    task = cloud.run(type="shell", command="echo boom >&2; exit 3")
    assert task["status"] == "failed"
    assert task["exit_code"] == 3
    assert "boom" in task["error"]


def test_thousand_lines_arrive_complete_and_in_order(cloud: Cloud) -> None:
    task = cloud.run(type="shell", command="seq 1 1000")
    assert task["status"] == "success"
    messages = [ln["message"] for ln in cloud.logs(task["id"])]
    assert messages == [str(i) for i in range(1, 1001)]


def test_follow_streams_until_end_and_resumes(cloud: Cloud) -> None:
    created = cloud.create(type="shell", command="for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done").json()
    url = f"/api/v1/tasks/{created['id']}/logs"
    events: list[tuple[str, str | None, dict]] = []
    with cloud.http.stream("GET", url, params={"follow": "true"}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        _read_sse(resp, events)
    logs = [e for e in events if e[0] == "log"]
    assert [e[2]["message"] for e in logs] == [f"line{i}" for i in range(1, 6)]
    assert events[-1][0] == "end" and events[-1][2]["status"] == "success"
    # Resume after the second line: only the rest, then the end event again.
    second_id = logs[1][1]
    resumed: list[tuple[str, str | None, dict]] = []
    with cloud.http.stream("GET", url, params={"follow": "true"}, headers={"Last-Event-ID": str(second_id)}) as resp:
        _read_sse(resp, resumed)
    assert [e[2]["message"] for e in resumed if e[0] == "log"] == ["line3", "line4", "line5"]
    assert resumed[-1][0] == "end"


def _read_sse(resp: httpx.Response, out: list[tuple[str, str | None, dict]]) -> None:
    event, ev_id = "message", None
    for line in resp.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            ev_id = line[4:]
        elif line.startswith("data: "):
            out.append((event, ev_id, json.loads(line[6:])))
        elif line == "":
            event, ev_id = "message", None


def test_logs_as_plain_text(cloud: Cloud) -> None:
    task = cloud.run(type="shell", command="echo a; echo b")
    r = cloud.http.get(f"/api/v1/tasks/{task['id']}/logs", headers={"Accept": "text/plain"})
    assert r.status_code == 200 and r.text == "a\nb\n"


def test_exec_timeout_kills_the_whole_group(cloud: Cloud) -> None:
    marker = f"{time.time_ns() % 1000}.{int(time.time()) % 997}7"  # unique sleep argument
    task = cloud.run(
        type="shell", command=f"sleep 10{marker} & sleep 10{marker}", exec_timeout=1, params={"kill_grace_s": 1}
    )
    assert task["status"] == "timeout"
    assert "timed out" in task["error"]
    wait_for(lambda: not _procs_with(f"sleep 10{marker}"), 10, "the group to be gone")


def test_cancel_running_task_kills_it(cloud: Cloud) -> None:
    marker = f"20{time.time_ns() % 100000}"
    created = cloud.create(type="shell", command=f"echo started; sleep {marker} & sleep {marker}").json()
    wait_for(lambda: _procs_with(f"sleep {marker}"), 20, "the command to start")
    r = cloud.http.post(f"/api/v1/tasks/{created['id']}/cancel")
    assert r.status_code == 200
    done = cloud.wait_final(created["id"], 30)
    assert done["status"] == "canceled"
    wait_for(lambda: not _procs_with(f"sleep {marker}"), 15, "the group to be gone")
    again = cloud.http.post(f"/api/v1/tasks/{created['id']}/cancel")
    assert again.status_code == 409 and "already finished" in again.json()["error"]


def test_request_id_returns_the_same_task(cloud: Cloud) -> None:
    first = cloud.create(type="shell", command="echo once", request_id="deploy-42")
    assert first.status_code == 201
    second = cloud.create(type="shell", command="echo once", request_id="deploy-42")
    assert second.status_code == 200 and second.json()["id"] == first.json()["id"]
    by_header = cloud.http.post(
        "/api/v1/tasks",
        json={"agent_id": "local", "type": "shell", "command": "echo once"},
        headers={"Idempotency-Key": "deploy-42"},
    )
    assert by_header.json()["id"] == first.json()["id"]
    total = cloud.http.get("/api/v1/tasks", params={"q": "echo once", "page_size": 100}).json()["total"]
    assert total == 1


def test_list_filters_and_pages(cloud: Cloud) -> None:
    for i in range(3):
        cloud.run(type="shell", command=f"echo list-{i}")
    failed = cloud.run(type="shell", command="exit 1  # list-f")
    r = cloud.http.get("/api/v1/tasks", params={"q": "list-", "page_size": 2})
    body = r.json()
    assert body["total"] == 4 and body["page_size"] == 2 and len(body["list"]) == 2
    assert body["list"][0]["id"] == failed["id"]  # newest first
    only_failed = cloud.http.get("/api/v1/tasks", params={"q": "list-", "status": "failed"}).json()
    assert [t["id"] for t in only_failed["list"]] == [failed["id"]]
    bad = cloud.http.get("/api/v1/tasks", params={"page_size": 101})
    assert bad.status_code == 400 and "page_size" in bad.json()["error"]


def test_secrets_are_masked(cloud: Cloud) -> None:
    task = cloud.run(
        type="shell",
        command='echo "$DB_PASSWORD" | wc -c',
        params={"password": "hunter2", "headers": {"Authorization": "Bearer abc"}},
        env={"DB_PASSWORD": "s3cret"},
    )
    assert task["result"].strip() == "7"  # the agent got the real value
    text = json.dumps(cloud.task(task["id"]))
    assert "hunter2" not in text and "s3cret" not in text and "Bearer abc" not in text
    assert task["params"]["password"] == "******"


def test_delete_only_finished_tasks(cloud: Cloud) -> None:
    running = cloud.create(type="shell", command="sleep 30").json()
    r = cloud.http.delete(f"/api/v1/tasks/{running['id']}")
    assert r.status_code == 409
    cloud.http.post(f"/api/v1/tasks/{running['id']}/cancel")
    cloud.wait_final(running["id"])
    assert cloud.http.delete(f"/api/v1/tasks/{running['id']}").status_code == 204
    assert cloud.http.get(f"/api/v1/tasks/{running['id']}").status_code == 404


def test_bad_input_gets_400_naming_the_field(cloud: Cloud) -> None:
    cases = [
        ({"type": "shell", "command": "x"}, "agent_id"),
        ({"agent_id": "local", "type": "nope", "command": "x"}, "known types"),
        ({"agent_id": "local", "type": "shell", "command": "  "}, "command"),
        ({"agent_id": "local", "type": "shell", "command": "x", "timeout": 301}, "timeout"),
        ({"agent_id": "local", "type": "execute", "params": {"cmd": ""}}, "params.cmd"),
        ({"agent_id": "local", "type": "shell", "command": "x", "bogus": 1}, "bogus"),
    ]
    for body, field in cases:
        r = cloud.http.post("/api/v1/tasks", json=body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["error"], (body, r.json())
    r = cloud.http.post("/api/v1/tasks", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_unknown_agent_404_and_missing_token_401(cloud: Cloud) -> None:
    r = cloud.create(agent_id="nobody", type="shell", command="echo")
    assert r.status_code == 404 and "agent not found" in r.json()["error"]
    r = httpx.post(f"{cloud.url}/api/v1/tasks", json={"agent_id": "local", "type": "shell", "command": "echo"})
    assert r.status_code == 401 and "error" in r.json()
    r = httpx.get(f"{cloud.url}/api/v1/tasks", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    # The admin token is known, but it is not an agent token.
    r = httpx.post(f"{cloud.url}/api/v1/agents/local/claim", json={}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 403 and "agent token" in r.json()["error"]


def test_openapi_and_health(cloud: Cloud) -> None:
    assert httpx.get(f"{cloud.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{cloud.url}/readyz").status_code == 200
    spec = httpx.get(f"{cloud.url}/openapi.json").json()
    assert "/api/v1/tasks" in spec["paths"]
    assert httpx.get(f"{cloud.url}/docs").status_code == 200


def test_agent_with_a_wrong_token_exits_with_a_clear_error(cloud: Cloud) -> None:
    bad = cloud.agent("intruder", wait_online=False, TIANGONG_AGENT_TOKEN="wrong-token")
    assert bad.proc.wait(timeout=30) == 2
    assert cloud.http.get("/api/v1/agents/intruder").status_code == 404


def test_agent_settings_and_tokens_do_not_reach_tasks(cloud: Cloud) -> None:
    task = cloud.run(type="shell", command="env | grep '^TIANGONG_' | cut -d= -f1 | sort")
    assert task["result"].split() == ["TIANGONG_TASK_ATTEMPT", "TIANGONG_TASK_ID"]


def test_metrics_count_tasks_and_agents(cloud: Cloud) -> None:
    cloud.run(type="shell", command="echo counted")
    text = httpx.get(f"{cloud.url}/metrics").text
    assert 'tiangong_agents{status="online"}' in text
    line = next(ln for ln in text.splitlines() if ln.startswith('tiangong_tasks{status="success",type="shell"}'))
    assert float(line.split()[1]) >= 1


def test_stderr_is_part_of_the_result(cloud: Cloud) -> None:
    """Seed 002: a task's result holds stdout and stderr, not only its log."""
    task = cloud.run(type="shell", command="echo ok; echo warn >&2; echo 'second warning' >&2")
    assert task["status"] == "success" and task["result"] == "ok\n"
    assert task["data"]["stderr"] == "warn\nsecond warning\n" and task["data"]["stderr_truncated"] is False
    failed = cloud.run(type="execute", params={"cmd": "sh", "args": ["-c", "echo broken >&2; exit 3"]})
    assert failed["status"] == "failed" and failed["data"]["stderr"] == "broken\n"
    assert failed["error"] == "exit code 3: broken"
