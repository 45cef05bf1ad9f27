"""`tiangong task ...` as a CI job runs it (only TIANGONG_URL and TIANGONG_TOKEN set), against a real
cloud and agent: exit codes per outcome, interrupts that cancel the task, one-line errors, --json."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_run import cli, created_id, one_json, one_line_error, start
from tests.e2e.harness import ADMIN, Cloud, free_port, wait_for


@pytest.fixture(scope="module")
def backend() -> Iterator[None]:
    """The CLI speaks HTTP only: one backend (SQLite) is enough here."""
    yield None


def test_a_successful_task_prints_its_output_and_id_and_exits_0(cloud: Cloud) -> None:
    done = cli(cloud.url, ADMIN, "task", "run", "local", "echo out; echo warn >&2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "out\n"
    task_id = done.stderr.split()[0]
    assert cloud.task(task_id)["status"] == "success" and "warn" in done.stderr


def test_a_failed_task_exits_10_and_logs_follow_exits_with_its_own_code(cloud: Cloud) -> None:
    failed = cli(cloud.url, ADMIN, "task", "run", "local", "echo doing; exit 5")
    assert failed.returncode == 10, failed.stderr
    task_id = failed.stderr.split()[0]
    assert f"{task_id} failed: exit code 5" in failed.stderr

    followed = cli(cloud.url, ADMIN, "task", "logs", "-f", task_id)
    assert followed.returncode == 5 and followed.stdout == "doing\n"
    as_json = cli(cloud.url, ADMIN, "task", "logs", "-f", task_id, "--json")
    assert as_json.returncode == 5
    assert one_json(as_json.stdout) == {"task_id": task_id, "status": "failed", "exit_code": 5, "error": "exit code 5"}
    waited = cli(cloud.url, ADMIN, "task", "wait", task_id)
    assert waited.returncode == 10 and waited.stdout == f"{task_id} failed\n"


def test_a_timed_out_task_exits_11(cloud: Cloud) -> None:
    done = cli(cloud.url, ADMIN, "task", "run", "local", "sleep 30", "--exec-timeout", "1", "--json")
    assert done.returncode == 11, done.stderr
    assert one_json(done.stdout)["status"] == "timeout"


def test_a_task_canceled_by_someone_else_exits_12(cloud: Cloud) -> None:
    with start(cloud.url, ADMIN, "task", "run", "local", "sleep 30") as (proc, lines):
        task_id = created_id(lines)
        canceled = cli(cloud.url, ADMIN, "task", "cancel", task_id, "--json")
        assert canceled.returncode == 0 and one_json(canceled.stdout)["id"] == task_id
        assert proc.wait(timeout=60) == 12
    assert cloud.task(task_id)["status"] == "canceled"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_cancels_its_task(cloud: Cloud, sig: signal.Signals, code: int) -> None:
    with start(cloud.url, ADMIN, "task", "run", "local", "sleep 60") as (proc, lines):
        task_id = created_id(lines)
        wait_for(lambda: cloud.task(task_id)["status"] == "running", 30, f"{task_id} running")
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
        assert f"{sig.name}: canceled {task_id}" in lines.get(timeout=10)
    assert cloud.wait_final(task_id)["status"] == "canceled"


def test_detach_leaves_the_task_running_and_says_so(cloud: Cloud) -> None:
    with start(cloud.url, ADMIN, "task", "run", "local", "sleep 60", "--detach") as (proc, lines):
        task_id = created_id(lines)
        wait_for(lambda: cloud.task(task_id)["status"] == "running", 30, f"{task_id} running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        assert f"left {task_id} running (--detach)" in lines.get(timeout=10)
    assert cloud.task(task_id)["status"] == "running"
    cloud.http.post(f"/api/v1/tasks/{task_id}/cancel")
    assert cloud.wait_final(task_id)["status"] == "canceled"


def test_params_from_a_file_env_and_request_id(cloud: Cloud, tmp_path: Path) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"cmd": "echo", "args": ["a  b", "$HOME"]}))
    done = cli(cloud.url, ADMIN, "task", "run", "local", "-t", "execute", "--params", f"@{params}")
    assert (done.returncode, done.stdout) == (0, "a  b $HOME\n"), done.stderr

    params.write_text(json.dumps({"cwd": str(tmp_path)}))
    args = ("task", "run", "local", 'echo "$GREETING from $PWD"', "--params", f"@{params}", "-e", "GREETING=hi there")
    first = cli(cloud.url, ADMIN, *args, "--request-id", "ci-job-77")
    assert (first.returncode, first.stdout) == (0, f"hi there from {tmp_path}\n"), first.stderr
    again = cli(cloud.url, ADMIN, *args, "--request-id", "ci-job-77")  # the same task, not run again
    assert again.returncode == 0 and again.stderr.split()[0] == first.stderr.split()[0]

    missing = cli(cloud.url, ADMIN, "task", "run", "local", "x", "--params", f"@{tmp_path / 'none.json'}")
    assert missing.returncode == 2 and "cannot read" in one_line_error(missing)


def test_ping_prints_its_result(cloud: Cloud) -> None:
    done = cli(cloud.url, ADMIN, "task", "run", "local", "-t", "ping", "127.0.0.1")
    assert done.returncode == 0, done.stderr
    task_id = done.stderr.split()[0]
    assert done.stdout == cloud.task(task_id)["result"] and "127.0.0.1" in done.stdout


def test_task_commands_print_one_json_document(cloud: Cloud) -> None:
    ran = cli(cloud.url, ADMIN, "task", "run", "local", "echo json-out", "--json")
    task = one_json(ran.stdout)  # the log line went to stderr: stdout is the document alone
    assert (ran.returncode, task["status"], task["result"]) == (0, "success", "json-out\n")
    assert "json-out" in ran.stderr
    task_id = task["id"]
    assert one_json(cli(cloud.url, ADMIN, "task", "get", task_id, "--json").stdout)["id"] == task_id
    listed = one_json(cli(cloud.url, ADMIN, "task", "list", "--json", "--page-size", "5").stdout)
    assert task_id in [t["id"] for t in listed["list"]]
    logs = one_json(cli(cloud.url, ADMIN, "task", "logs", task_id, "--json").stdout)
    assert [ln["message"] for ln in logs] == ["json-out"]
    retried = cli(cloud.url, ADMIN, "task", "retry", task_id, "--json")
    assert one_json(retried.stdout)["id"] == task_id
    cloud.wait_final(task_id)
    queued = one_json(cli(cloud.url, ADMIN, "task", "run", "local", "true", "--no-wait", "--json").stdout)
    assert queued["status"] in ("pending", "running", "success")
    usage = cli(cloud.url, ADMIN, "task", "run", "--json")
    assert usage.returncode == 2 and "agent_id" in one_json(usage.stdout)["error"]
    conflict = cli(cloud.url, ADMIN, "task", "cancel", task_id, "--json")  # already finished: 409
    assert conflict.returncode == 6 and "error" in one_json(conflict.stdout)


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


CASES = [
    # (what, url, token, expected code, words of the one line)
    ("no token", "CLOUD", None, 4, "no token: set TIANGONG_TOKEN or pass --token"),
    ("wrong token", "CLOUD", "tgp_not-a-real-token", 4, "the cloud refused the token (401"),
    ("cloud down", "DEAD", ADMIN, 3, "connection refused; is it running? (TIANGONG_URL)"),
    ("bad URL", "htp:/nowhere", ADMIN, 2, "invalid URL 'htp:/nowhere'"),
    ("not found", "CLOUD", ADMIN, 5, "task not found: task-999999"),
]


@pytest.mark.parametrize(("what", "url", "token", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_user_mistakes_are_one_line_with_their_code(
    cloud: Cloud, what: str, url: str, token: str | None, code: int, words: str
) -> None:
    target = {"CLOUD": cloud.url, "DEAD": _dead_url()}.get(url, url)
    human: tuple[str, ...] = ("task", "get", "task-999999")
    machine: tuple[str, ...] = ("task", "wait", "task-999999")
    if what != "not found":
        human, machine = ("task", "run", "local", "echo x"), ("files", "list")
    done = cli(target, token, *human)
    assert done.returncode == code, done.stderr
    assert words in one_line_error(done) and done.stdout == ""
    as_json = cli(target, token, *machine, "--json")
    assert as_json.returncode == code
    assert words in one_json(as_json.stdout)["error"]


def test_following_survives_a_cloud_restart(make_cloud: Callable[..., Cloud]) -> None:
    own = make_cloud(process=True)
    own.agent("local")
    with start(own.url, ADMIN, "task", "run", "local", "echo one; sleep 8; echo two", stdout=True) as (proc, lines):
        task_id = created_id(lines)
        wait_for(lambda: [ln["message"] for ln in own.logs(task_id)] == ["one"], 30, "the first line")
        own.restart()
        assert proc.wait(timeout=120) == 0
        assert proc.stdout is not None and proc.stdout.read() == "one\ntwo\n"  # each line once
        assert any("cannot reach the cloud" in ln and "trying again for 60 s" in ln for ln in list(lines.queue))
    assert own.task(task_id)["status"] == "success"
