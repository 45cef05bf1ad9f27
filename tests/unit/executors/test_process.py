"""shell, python and execute tasks run as real processes: streaming, capping, stopping, validating."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executors.process import CHUNK
from executors.procs import group_running
from executors.registry import default_exec_timeout, get_executor
from tests.unit.executors.harness import Harness, make_task, run_task
from wire.tasks import LogStream, TaskRequest, TaskStatus


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_group_gone(pgid: int) -> None:
    """Nothing of the group runs now, and its zombies are reaped (by init, at its own pace) soon."""
    assert not group_running(pgid)
    end = time.monotonic() + 10
    while group_exists(pgid) and time.monotonic() < end:
        time.sleep(0.02)
    assert not group_exists(pgid), f"process group {pgid} still exists"


def cancel_on(text: str) -> Callable[[Harness], None]:
    """Harness setup: set the cancel event as soon as a log line equals `text`."""

    def on_line(ctx: Harness, message: str) -> None:
        if message == text:
            ctx.cancel_event.set()

    def setup(ctx: Harness) -> None:
        ctx.on_line = on_line

    return setup


def test_echo_succeeds_with_its_output_as_result(tmp_path: Path) -> None:
    out, ctx = run_task(make_task("echo hello"), tmp_path)
    assert out.status is TaskStatus.success
    assert out.exit_code == 0
    assert out.result == "hello\n"
    assert out.error == ""
    assert out.data == {
        "exit_code": 0,
        "stdout_bytes": 6,
        "stderr_bytes": 0,
        "truncated": False,
        "stderr": "",
        "stderr_truncated": False,
    }
    assert ctx.lines == [(LogStream.stdout, "hello")]


def test_stdout_and_stderr_stay_apart_and_in_order(tmp_path: Path) -> None:
    script = "import sys\nfor i in range(50):\n    print(f'out-{i}')\n    print(f'err-{i}', file=sys.stderr)\n"
    out, ctx = run_task(make_task(script, type="python"), tmp_path)
    assert out.status is TaskStatus.success
    assert ctx.stream(LogStream.stdout) == [f"out-{i}" for i in range(50)]
    assert ctx.stream(LogStream.stderr) == [f"err-{i}" for i in range(50)]
    assert out.result == "".join(f"out-{i}\n" for i in range(50))


def test_nonzero_exit_fails_with_code_and_last_stderr_line(tmp_path: Path) -> None:
    out, _ = run_task(make_task("echo first >&2; echo oops >&2; exit 2"), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.exit_code == 2
    assert out.error == "exit code 2: oops"
    assert out.data["exit_code"] == 2


def test_death_by_signal_reports_128_plus_n_and_names_it(tmp_path: Path) -> None:
    out, _ = run_task(make_task("kill -TERM $$"), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM" in out.error


def test_exec_timeout_kills_the_whole_group_including_grandchildren(tmp_path: Path) -> None:
    task = make_task("echo $$; sleep 100 & sleep 100", exec_timeout=1)
    out, ctx = run_task(task, tmp_path, timeout=1.0)
    pgid = int(ctx.stream(LogStream.stdout)[0])
    assert out.status is TaskStatus.timeout
    assert out.error == "execution timed out after 1 s"
    assert ctx.stream(LogStream.system) == [f"execution timed out after 1 s; sent SIGTERM to process group {pgid}"]
    assert_group_gone(pgid)


def test_cancel_stops_the_process(tmp_path: Path) -> None:
    started = time.monotonic()
    out, ctx = run_task(make_task("echo $$; echo ready; sleep 100"), tmp_path, setup=cancel_on("ready"))
    pgid = int(ctx.stream(LogStream.stdout)[0])
    assert out.status is TaskStatus.canceled
    assert out.error == "canceled"
    assert out.exit_code == 128 + signal.SIGTERM
    assert ctx.stream(LogStream.system) == [f"canceled; sent SIGTERM to process group {pgid}"]
    assert_group_gone(pgid)
    assert time.monotonic() - started < 30


def test_a_group_ignoring_sigterm_gets_sigkill_after_the_grace(tmp_path: Path) -> None:
    task = make_task("trap '' TERM; sleep 100 & echo $$; echo ready; sleep 100", kill_grace_s=0.2)
    out, ctx = run_task(task, tmp_path, setup=cancel_on("ready"))
    pgid = int(ctx.stream(LogStream.stdout)[0])
    assert out.status is TaskStatus.canceled
    assert out.exit_code == 128 + signal.SIGKILL
    system = ctx.stream(LogStream.system)
    assert len(system) == 2
    assert system[1] == f"process group {pgid} still running 0.2 s after SIGTERM; sent SIGKILL"
    assert_group_gone(pgid)


def test_a_cancel_before_start_runs_nothing(tmp_path: Path) -> None:
    out, ctx = run_task(make_task("touch ran"), tmp_path, setup=lambda ctx: ctx.cancel_event.set())
    assert out.status is TaskStatus.canceled
    assert not (tmp_path / "ran").exists()
    assert ctx.lines == []


def test_output_over_the_cap_keeps_head_and_tail_with_a_marker(tmp_path: Path) -> None:
    loop = "i=0; while [ $i -lt 100 ]; do printf 'line-%03d\\n' $i; i=$((i+1)); done"
    lines = [f"line-{i:03d}\n" for i in range(100)]

    def small_cap(ctx: Harness) -> None:
        ctx.max_output_bytes = 100

    out, ctx = run_task(make_task(loop), tmp_path, setup=small_cap)
    assert out.status is TaskStatus.success
    marker = "[tiangong: 810 bytes of output dropped; kept the first and last 50 bytes]\n"
    assert out.result == "".join(lines[:5]) + marker + "".join(lines[-5:])
    assert out.data == {
        "exit_code": 0,
        "stdout_bytes": 900,
        "stderr_bytes": 0,
        "truncated": True,
        "stderr": "",
        "stderr_truncated": False,
    }
    # The executor logs every line; capping the log is the agent's job.
    assert len(ctx.stream(LogStream.stdout)) == 100


def test_a_thousand_lines_arrive_complete_and_in_order(tmp_path: Path) -> None:
    out, ctx = run_task(make_task("seq 1 1000"), tmp_path)
    expected = [str(i) for i in range(1, 1001)]
    assert ctx.stream(LogStream.stdout) == expected
    assert out.result == "".join(f"{n}\n" for n in expected)


def test_a_3mb_line_without_newline_is_read_in_chunks(tmp_path: Path) -> None:
    script = "import sys; sys.stdout.write('x' * 3_000_000)"
    out, ctx = run_task(make_task(script, type="python"), tmp_path)
    pieces = ctx.stream(LogStream.stdout)
    assert out.status is TaskStatus.success
    assert out.result == "x" * 3_000_000
    assert len(pieces) > 1
    assert all(len(piece) <= CHUNK for piece in pieces)
    assert "".join(pieces) == out.result
    assert out.data["stdout_bytes"] == 3_000_000


def test_a_character_split_between_chunks_is_decoded_whole(tmp_path: Path) -> None:
    script = f"import sys; sys.stdout.buffer.write(b'x' * {CHUNK - 1} + 'é'.encode() + b'\\n')"
    out, ctx = run_task(make_task(script, type="python"), tmp_path)
    assert "".join(ctx.stream(LogStream.stdout)) == "x" * (CHUNK - 1) + "é"
    assert "\ufffd" not in out.result


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    out, ctx = run_task(make_task("printf 'ok\\377end\\n'; printf 'bad\\376\\n' >&2"), tmp_path)
    assert out.status is TaskStatus.success
    assert ctx.stream(LogStream.stdout) == ["ok\ufffdend"]
    assert ctx.stream(LogStream.stderr) == ["bad\ufffd"]
    assert out.result == "ok\ufffdend\n"


def test_execute_passes_args_literally_without_a_shell(tmp_path: Path) -> None:
    task = make_task(type="execute", cmd="printf", args=["%s|", "a b", "$HOME"])
    out, _ = run_task(task, tmp_path)
    assert out.status is TaskStatus.success
    assert out.result == "a b|$HOME|"


def test_a_missing_program_fails_with_a_clear_error(tmp_path: Path) -> None:
    out, _ = run_task(make_task(type="execute", cmd="/nonexistent/tool"), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error == "cannot start '/nonexistent/tool': No such file or directory"


def test_a_program_without_execute_permission_fails_with_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    out, _ = run_task(make_task(type="execute", cmd=str(script)), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error == f"cannot start {str(script)!r}: Permission denied"


@pytest.mark.parametrize(
    ("type", "command", "params", "message"),
    [
        ("shell", "  ", {}, "command: must not be empty for shell tasks"),
        ("python", "", {}, "command: must not be empty for python tasks"),
        ("shell", "echo", {"shell": ""}, "params.shell: must be a non-empty string"),
        ("shell", "echo", {"shell": ["bash"]}, "params.shell: must be a non-empty string"),
        ("shell", "echo", {"cwd": 3}, "params.cwd: must be a string"),
        ("python", "print()", {"python": 3}, "params.python: must be a non-empty string"),
        ("shell", "echo", {"kill_grace_s": "soon"}, "params.kill_grace_s: must be a number of seconds from 0 to 60"),
        ("shell", "echo", {"kill_grace_s": -1}, "params.kill_grace_s: must be a number of seconds from 0 to 60"),
        ("shell", "echo", {"kill_grace_s": 61}, "params.kill_grace_s: must be a number of seconds from 0 to 60"),
        ("execute", "", {}, "params.cmd: is required and must be a non-empty string"),
        ("execute", "", {"cmd": " "}, "params.cmd: is required and must be a non-empty string"),
        ("execute", "", {"cmd": "ls", "args": "-l"}, "params.args: must be a list of strings"),
        ("execute", "", {"cmd": "ls", "args": ["-l", 2]}, "params.args: must be a list of strings"),
    ],
)
def test_validation_names_the_field(type: str, command: str, params: dict[str, Any], message: str) -> None:
    req = TaskRequest(type=type, command=command, params=params)
    with pytest.raises(ValueError) as info:
        get_executor(type).validate(req)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("type", "command", "params"),
    [
        ("shell", "echo hi", {"shell": "bash", "cwd": "sub", "kill_grace_s": 1.5}),
        ("python", "print(1)", {"python": "python3"}),
        ("execute", "", {"cmd": "ls", "args": ["-l"]}),
        ("execute", "", {"cmd": "ls"}),
    ],
)
def test_valid_requests_pass(type: str, command: str, params: dict[str, Any]) -> None:
    get_executor(type).validate(TaskRequest(type=type, command=command, params=params))


def test_shell_default_exec_timeout_is_declared() -> None:
    assert default_exec_timeout(TaskRequest(type="shell", command="true")) == 1800


def test_python_exception_fails_with_the_traceback_in_stderr(tmp_path: Path) -> None:
    out, ctx = run_task(make_task("print('before')\nraise ValueError('boom')\n", type="python"), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.exit_code == 1
    assert out.error == "exit code 1: ValueError: boom"
    assert out.result == "before\n"
    stderr = ctx.stream(LogStream.stderr)
    assert stderr[0] == "Traceback (most recent call last):"
    assert stderr[-1] == "ValueError: boom"
    assert list(tmp_path.iterdir()) == []  # the script file is removed afterwards


def test_tiangong_file_points_at_the_fetched_file(tmp_path: Path) -> None:
    uploaded = tmp_path / "upload.sh"
    uploaded.write_text("echo from the script\n")

    def with_file(ctx: Harness) -> None:
        ctx.files["f-1"] = uploaded

    out, _ = run_task(make_task('sh "$TIANGONG_FILE"', file_id="f-1"), tmp_path, setup=with_file)
    assert out.status is TaskStatus.success
    assert out.result == "from the script\n"


def test_a_file_that_cannot_be_fetched_fails_the_task(tmp_path: Path) -> None:
    out, ctx = run_task(make_task("touch ran", file_id="f-missing"), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error == "file_id: cannot fetch f-missing: no file 'f-missing' on this agent"
    assert not (tmp_path / "ran").exists()
    assert ctx.lines == []


def test_env_and_task_id_reach_the_process(tmp_path: Path) -> None:
    task = make_task('echo "$TIANGONG_TASK_ID:$GREETING"', env={"GREETING": "hi"})
    out, _ = run_task(task, tmp_path)
    assert out.result == "task-1:hi\n"


def test_the_agents_environment_reaches_the_process_without_its_own_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIANGONG_AGENT_TOKEN", "agent-secret")
    monkeypatch.setenv("SITE", "eu-1")
    monkeypatch.setenv("COLOUR", "grün")  # not ASCII: passed on as the agent has it
    task = make_task('echo "${TIANGONG_AGENT_TOKEN:-none} $SITE $COLOUR $TIANGONG_TASK_ATTEMPT"', env={"SITE": "us-2"})
    out, _ = run_task(task, tmp_path)
    assert out.result == "none us-2 grün 1\n"  # the task's env wins over the agent's


def test_stdin_is_empty(tmp_path: Path) -> None:
    out, _ = run_task(make_task("cat"), tmp_path, timeout=10.0)
    assert out.status is TaskStatus.success
    assert out.result == ""


def test_cwd_param_sets_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    out, _ = run_task(make_task("pwd", cwd=str(tmp_path / "sub")), tmp_path)
    assert out.result == f"{tmp_path / 'sub'}\n"
    out, _ = run_task(make_task("pwd", cwd="sub"), tmp_path)
    assert out.result == f"{tmp_path / 'sub'}\n"


def test_without_cwd_the_workdir_is_used(tmp_path: Path) -> None:
    out, _ = run_task(make_task("pwd"), tmp_path)
    assert out.result == f"{tmp_path}\n"


def test_a_missing_cwd_fails_clearly(tmp_path: Path) -> None:
    out, _ = run_task(make_task("pwd", cwd=str(tmp_path / "nope")), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error == f"params.cwd: directory {tmp_path / 'nope'} does not exist"


def test_shell_param_picks_the_shell(tmp_path: Path) -> None:
    out, _ = run_task(make_task('echo "${BASH_VERSION:+bash}"', shell="bash"), tmp_path)
    assert out.result == "bash\n"


def test_a_background_daemon_holding_the_pipes_is_left_running(tmp_path: Path) -> None:
    started = time.monotonic()
    out, ctx = run_task(make_task("sleep 30 & echo $$"), tmp_path)
    pgid = int(ctx.stream(LogStream.stdout)[0])
    try:
        assert out.status is TaskStatus.success
        assert time.monotonic() - started < 10  # well before the daemon's 30 s
        assert group_running(pgid)  # not killed: deploy scripts may leave daemons behind
    finally:
        os.killpg(pgid, signal.SIGKILL)
