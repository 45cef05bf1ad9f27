"""`tiangong shell AGENT` in a real terminal (a PTY), against a real cloud and agent: what is typed runs on
the agent's shell, what it prints comes back, and the shell's exit ends the command and the task."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from tests.e2e.cli_run import ci_env
from tests.e2e.harness import ADMIN, ROOT, Cloud


def _read_until(fd: int, needle: bytes, timeout: float = 30, *, also: bytes | None = None) -> bytes:
    """What the terminal showed up to `needle` (or `also`, when given)."""
    seen = b""
    end = time.monotonic() + timeout
    while needle not in seen and (also is None or also not in seen):
        left = end - time.monotonic()
        assert left > 0, f"{needle!r} never came; the terminal showed {seen[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            seen += chunk
    assert needle in seen or (also is not None and also in seen), f"{needle!r} never came: {seen[-500:]!r}"
    return seen


def test_shell_runs_what_is_typed_and_ends_with_the_shell(cloud: Cloud) -> None:
    main, sub = os.openpty()
    cmd = [sys.executable, "-m", "cli.main", "shell", "local"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ci_env(cloud.url, ADMIN), stdin=sub, stdout=sub, stderr=sub)
    os.close(sub)
    try:
        started = _read_until(main, b"exit the shell to end it")
        task_id = started.split(b":")[0].split()[-1].decode()
        # Type at the prompt, as a person does: a shell still starting may drop keys typed ahead of it.
        _read_until(main, b"# ", also=b"$ ")
        os.write(main, b"echo $((6 * 7))-from-the-agent\r")
        _read_until(main, b"42-from-the-agent")  # computed by the remote shell: not our own echo of the keys
        os.write(main, b"exit\r")
        _read_until(main, b"shell ended")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        os.close(main)
    task = cloud.wait_final(task_id)
    assert task["type"] == "web_shell" and task["status"] == "success"
    assert any("42-from-the-agent" in line["message"] for line in cloud.logs(task_id))  # the transcript
