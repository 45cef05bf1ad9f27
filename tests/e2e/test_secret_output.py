"""A secret given to a task never shows in its output: result, error, data and log lines, over REST (JSON,
text and live) and JSON-RPC alike. The agent masks before anything leaves it; the cloud masks again
what an agent sends (an old or faulty agent), with the task's unsealed params and env."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ADMIN, Cloud
from wire.secrets import MASK

PASSWORD = "Pw-s3cret-71"
TOKEN = "Tok-9f8e7d6c"
DSN = "dsn-Secret-55"
BEARER = "bearer-Xy7-credential"
URL_PASSWORD = "UrlPw-3345"
ARG_PASSWORD = "ArgPw-8812"
SECRETS = (PASSWORD, TOKEN, DSN, BEARER, URL_PASSWORD, ARG_PASSWORD)


def everything_shown(cloud: Cloud, task_id: str) -> str:
    """Every way a caller can read the task and its log, as one text."""
    n = int(task_id.removeprefix("task-"))
    rpc = cloud.rpc("task_query", token=ADMIN, task_data_query={"condition": [{"task_id": n}]})
    raw_log = cloud.http.get(f"/api/v1/tasks/{task_id}/logs", headers={"Accept": "text/plain"}).text
    live = cloud.http.get(f"/api/v1/tasks/{task_id}/logs", params={"follow": "true"}).text
    listed = cloud.http.get("/api/v1/tasks", params={"page_size": 100}).text
    parts = [json.dumps(cloud.task(task_id)), json.dumps(cloud.logs(task_id)), raw_log, live, json.dumps(rpc), listed]
    return "\n".join(parts)


def assert_masked(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} shown"
    assert MASK in text


def test_a_shell_tasks_output_is_masked_everywhere(cloud: Cloud) -> None:
    command = (
        "printf 'pw=Pw-s3'; sleep 0.2; printf 'cret-71\\n';"  # one secret, written in two pieces
        # Repeats on a line, over more lines than one log batch holds (500): secrets at every boundary.
        'for i in $(seq 1 1200); do echo "$i $API_TOKEN$API_TOKEN $DSN"; done;'
        'echo "fatal: cannot use $DSN" >&2; exit 4'
    )
    task = cloud.run(
        type="shell",
        command=command,
        params={"password": PASSWORD, "secret_keys": ["DSN"]},
        env={"API_TOKEN": TOKEN, "DSN": DSN},
    )
    assert task["status"] == "failed"
    assert task["result"].startswith(f"pw={MASK}\n1 {MASK}{MASK} {MASK}\n2 {MASK}{MASK} {MASK}\n")
    assert task["error"] == f"exit code 4: fatal: cannot use {MASK}"
    assert task["env"] == {"API_TOKEN": MASK, "DSN": MASK}
    lines = [ln["message"] for ln in cloud.logs(task["id"])]
    assert lines[0] == f"pw={MASK}" and lines[1200] == f"1200 {MASK}{MASK} {MASK}"
    assert_masked(everything_shown(cloud, task["id"]))


class _EchoHeaders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps(dict(self.headers)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHeaders)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_authorization_header_is_masked_in_result_and_data(cloud: Cloud, echo_url: str) -> None:
    """The server echoes the request's headers: the credential comes back in the body."""
    task = cloud.run(
        type="api", command="GET", params={"url": f"{echo_url}/", "headers": {"Authorization": f"Bearer {BEARER}"}}
    )
    assert task["status"] == "success"
    assert json.loads(task["data"]["body"])["Authorization"] == MASK  # the whole value, scheme included
    assert task["params"]["headers"]["Authorization"] == MASK
    assert_masked(everything_shown(cloud, task["id"]))


def test_json_rpc_shows_execute_args_masked_as_rest_does(cloud: Cloud) -> None:
    args = ["--url", f"mysql://app:{URL_PASSWORD}@db/x", "--password", ARG_PASSWORD, f"--token={TOKEN}"]
    task = cloud.run(type="execute", params={"cmd": "echo", "args": args})
    assert task["status"] == "success"
    shown = ["--url", f"mysql://app:{MASK}@db/x", "--password", MASK, f"--token={MASK}"]
    assert task["params"]["args"] == shown
    assert task["result"] == " ".join(shown) + "\n"
    answer = cloud.rpc("task_query", token=ADMIN, task_data_query={"condition": [{"task_id": int(task["id"][5:])}]})
    [record] = answer["result"]
    assert record["task_event_type"] == {"execute": {"cmd": "echo", "args": shown}}
    assert_masked(everything_shown(cloud, task["id"]))


@pytest.fixture
def old_agent(cloud: Cloud, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """The agent protocol spoken by hand, as an agent that masks nothing would speak it."""
    with contextlib.closing(cloud.scripted(f"unmasking-{request.node.name}", ["shell"])) as client:
        yield client


def _line(seq: int, message: str) -> dict[str, Any]:
    return {"seq": seq, "stream": "stdout", "message": message}


def test_the_cloud_masks_what_an_unmasking_agent_sends(cloud: Cloud, old_agent: httpx.Client) -> None:
    agent_id = old_agent.headers["X-Agent-Id"]
    created = cloud.create(
        agent_id=agent_id,
        type="shell",
        command=f"deploy --password {ARG_PASSWORD}",
        params={"target": {"password": PASSWORD}, "secret_keys": ["DSN"]},
        env={"API_TOKEN": TOKEN, "DSN": DSN},
    ).json()
    [a] = old_agent.post(f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 0}).json()
    url, token = f"/api/v1/agent/tasks/{a['id']}/logs", a["task_token"]
    # The secret at the end of one batch and the start of the next, and repeated on a line.
    first = [_line(1, "starting"), _line(2, f"using {PASSWORD}")]
    second = [_line(3, f"{PASSWORD} again"), _line(4, f"{TOKEN}{TOKEN} {DSN} {ARG_PASSWORD}")]
    for batch in (first, second):
        assert old_agent.post(url, json={"task_token": token, "lines": batch}).status_code == 200
    report = {
        "task_token": token,
        "status": "failed",
        "exit_code": 1,
        "result": f"connected as app:{PASSWORD}\n",
        "error": f"auth failed with {TOKEN}",
        "data": {"rows": [[DSN, {"nested": [f"x{PASSWORD}x"]}]], DSN: 1},
        "log_lines": 5,
        "lines": [_line(5, f"bye {DSN}")],
    }
    r = old_agent.post(f"/api/v1/agent/tasks/{a['id']}/result", json=report)
    assert r.status_code == 200, r.text
    task = cloud.task(created["id"])
    assert task["result"] == f"connected as app:{MASK}\n"
    assert task["error"] == f"auth failed with {MASK}"
    assert task["data"] == {"rows": [[MASK, {"nested": [f"x{MASK}x"]}]], MASK: 1}
    assert [ln["message"] for ln in cloud.logs(created["id"])] == [
        "starting",
        f"using {MASK}",
        f"{MASK} again",
        f"{MASK}{MASK} {MASK} {MASK}",
        f"bye {MASK}",
    ]
    assert_masked(everything_shown(cloud, created["id"]))


def test_values_named_in_secret_keys_are_sealed_in_storage(cloud: Cloud) -> None:
    task = cloud.run(
        type="shell",
        command='echo "$DEPLOY_KEY"',
        env={"DEPLOY_KEY": DSN},
        params={"secret_keys": ["DEPLOY_KEY", "dsn"], "dsn": DSN},
    )
    assert task["status"] == "success" and task["result"] == f"{MASK}\n"
    assert task["env"]["DEPLOY_KEY"] == MASK and task["params"]["dsn"] == MASK
    n = task["id"].removeprefix("task-")
    ((params, env),) = cloud.sql(f"SELECT CAST(params AS TEXT), CAST(env AS TEXT) FROM tasks WHERE id = {n}")
    assert DSN not in params and DSN not in env
    assert set(json.loads(env)["DEPLOY_KEY"]) == {"$sealed"}
