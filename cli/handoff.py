"""Secrets passed between our processes through pipes, never environment variables or arguments.

Tasks run as the agent's user, so they can read `/proc/<pid>/environ` of the agent, of `tiangong up` and
of the cloud it started, and anyone can read every process's command line. A secret given to us in the
environment is therefore moved into a pipe and the process re-executes itself without it (same pid;
`/proc/<pid>/environ` shows the new, clean environment); children get their secrets through pipes too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import NoReturn

log = logging.getLogger("tiangong")

SECRET_VARS = ("TIANGONG_ADMIN_TOKEN", "TIANGONG_AGENT_TOKEN", "TIANGONG_SECRET_KEY", "TIANGONG_DATABASE_URL")
"""Settings that are, or may carry (a database URL's password), secrets."""
_PIPE_LIMIT = 60_000
"""Bytes written into a pipe before its reader exists: below the kernel's 64 KiB pipe buffer."""


def secrets_in(env: Mapping[str, str]) -> dict[str, str]:
    """The secret settings set (non-empty) in `env`."""
    return {k: env[k] for k in SECRET_VARS if env.get(k)}


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """`env` minus the secret settings: what a child process may see."""
    return {k: v for k, v in env.items() if k not in SECRET_VARS}


def as_settings(secrets: Mapping[str, str]) -> dict[str, str]:
    """`{"TIANGONG_ADMIN_TOKEN": v}` -> `{"admin_token": v}`: keyword arguments for a settings class."""
    return {k.removeprefix("TIANGONG_").lower(): v for k, v in secrets.items() if k in SECRET_VARS}


def pipe_with(text: str) -> int:
    """The read end of a new pipe already holding `text` (the write end is closed: the reader gets EOF).
    Pass it to a child with `pass_fds`, then close it here."""
    data = text.encode("utf-8")
    if len(data) > _PIPE_LIMIT:
        raise ValueError(f"secrets: {len(data)} bytes is more than a pipe takes at once ({_PIPE_LIMIT})")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


def read_secrets(fd: int) -> dict[str, str]:
    """The secrets a parent put in pipe `fd` (a JSON object of setting names), closing it."""
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read()
    value = json.loads(raw) if raw else {}
    if not isinstance(value, dict):
        raise ValueError("secrets: expected a JSON object in the secrets pipe")
    return {str(k): str(v) for k, v in value.items()}


def reexec_without_secrets(payload: str, drop_options: Iterable[str], fd_option: str, *, as_path: bool) -> NoReturn:
    """Re-execute this command with the secrets out of its environment and command line.

    `payload` goes into a pipe that the new process finds through `fd_option` (its number, or its path
    `/dev/fd/<n>` when `as_path`); `drop_options` (with their values) leave the command line.
    """
    fd = pipe_with(payload)
    os.set_inheritable(fd, True)
    args = [*_without_options(sys.orig_argv[1:], set(drop_options)), fd_option, f"/dev/fd/{fd}" if as_path else str(fd)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *args], without_secrets(os.environ))


def _without_options(argv: list[str], names: set[str]) -> list[str]:
    """`argv` minus `--name value` and `--name=value` for each of `names`."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif arg.split("=", 1)[0] not in names:
            out.append(arg)
    return out
