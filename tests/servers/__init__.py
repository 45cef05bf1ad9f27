"""Real servers the tests start on a free port (or find through an environment variable), and fakes at
boundaries that cannot be real here (named as fakes).

Locally a server that cannot be started or reached skips its tests with the reason; in CI (`CI=true`) the
tests fail instead, so a broken setup never passes as green.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from typing import IO, AnyStr, NoReturn

import pytest


def unavailable(what: str, exc: BaseException | str) -> NoReturn:
    """Skip (locally) or fail (in CI) the tests that need `what`."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not available in CI: {exc}")
    pytest.skip(f"{what} is not available: {exc}")


def free_port() -> int:
    """A local TCP port nothing listens on right now: for a server to start on, or a connection to be refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_server(proc: subprocess.Popen[AnyStr], watcher: threading.Thread, pipe: IO[AnyStr] | None) -> None:
    """Stop a server the tests started (SIGTERM, SIGKILL after 10 s), then the thread reading its output."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    watcher.join(10)
    if pipe is not None:
        pipe.close()
