"""Secrets between our processes: through pipes, out of environments and command lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cli.handoff import _without_options, as_settings, pipe_with, read_secrets, secrets_in, without_secrets


def test_secret_settings_are_split_from_the_rest() -> None:
    env = {"TIANGONG_AGENT_TOKEN": "t", "TIANGONG_DATABASE_URL": "postgresql://u:pw@h/db", "TIANGONG_PORT": "1"}
    env |= {"TIANGONG_SECRET_KEY": "", "PATH": "/bin"}
    assert secrets_in(env) == {"TIANGONG_AGENT_TOKEN": "t", "TIANGONG_DATABASE_URL": "postgresql://u:pw@h/db"}
    assert without_secrets(env) == {"TIANGONG_PORT": "1", "PATH": "/bin"}
    assert as_settings(secrets_in(env)) == {"agent_token": "t", "database_url": "postgresql://u:pw@h/db"}


def test_options_and_their_values_leave_the_command_line() -> None:
    argv = ["-m", "cli.main", "agent", "--token", "s3cret", "--server", "x", "--token-file=/f", "--token-files", "y"]
    kept = ["-m", "cli.main", "agent", "--server", "x", "--token-files", "y"]
    assert _without_options(argv, {"--token", "--token-file"}) == kept


def test_a_child_reads_its_secrets_from_the_pipe() -> None:
    fd = pipe_with(json.dumps({"TIANGONG_ADMIN_TOKEN": "a"}))
    try:
        code = f"from cli.handoff import read_secrets; print(read_secrets({fd}))"
        out = subprocess.run([sys.executable, "-c", code], pass_fds=(fd,), capture_output=True, text=True, check=True)
    finally:
        os.close(fd)
    assert out.stdout.strip() == "{'TIANGONG_ADMIN_TOKEN': 'a'}"


def test_read_secrets_closes_the_pipe() -> None:
    fd = pipe_with("{}")
    assert read_secrets(fd) == {}
    try:
        os.fstat(fd)
    except OSError:
        return
    raise AssertionError("the pipe was left open")
