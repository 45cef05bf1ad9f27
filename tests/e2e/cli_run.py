"""Running the `tiangong` CLI as a CI job does: a subprocess whose environment holds only PATH,
TIANGONG_URL and TIANGONG_TOKEN."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from tests.e2e.harness import ROOT


def ci_env(url: str | None, token: str | None, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}
    if url is not None:
        env["TIANGONG_URL"] = url
    if token is not None:
        env["TIANGONG_TOKEN"] = token
    return env


def cli(url: str | None, token: str | None, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`tiangong <args>`, to its end."""
    cmd = [sys.executable, "-m", "cli.main", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ci_env(url, token, **extra), capture_output=True, text=True, timeout=120)


@contextmanager
def start(
    url: str, token: str, *args: str, stdout: bool = False
) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """`tiangong <args>` in the background, and a queue of its stderr lines (read by a thread); its stdout
    is a pipe when `stdout`."""
    cmd = [sys.executable, "-m", "cli.main", *args]
    out = subprocess.PIPE if stdout else subprocess.DEVNULL
    with subprocess.Popen(cmd, cwd=ROOT, env=ci_env(url, token), stdout=out, stderr=subprocess.PIPE, text=True) as proc:
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stderr is not None
        reader = _pump(proc.stderr, lines)
        try:
            yield proc, lines
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join(10)


def _pump(stream: IO[str], into: queue.Queue[str]) -> threading.Thread:
    def pump() -> None:
        for ln in stream:  # ends at EOF
            into.put(ln)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return reader


def created_id(lines: queue.Queue[str]) -> str:
    """The task id the CLI prints on stderr as soon as the cloud created the task."""
    first = lines.get(timeout=60)
    assert " created on " in first, first
    return first.split()[0]


def one_json(out: str) -> Any:
    """stdout holds exactly one JSON document."""
    return json.loads(out)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """stderr is a single line, no traceback: what a person reads in a CI log."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]
