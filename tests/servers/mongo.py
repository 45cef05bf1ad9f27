"""A MongoDB for tests: the server at `TIANGONG_TEST_MONGO_URL` (`mongodb://[user:pw@]host:port`), else
nx-27017 started on a free port.

nx-27017, a MongoDB wire-protocol server (backed by SQLite), stands in for mongod: pymongo talks to it
over TCP exactly as to MongoDB. It has no authentication, so tests against it connect without an
account; with `--data-dir memory` every logical database is its own in-memory SQLite database.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.servers import free_port, stop_server, unavailable

START_SECONDS = 30.0
ENV = "TIANGONG_TEST_MONGO_URL"


@dataclass
class MongoServer:
    """Where the server listens, and the account to use (none for nx-27017)."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None

    def target(self, **extra: Any) -> dict[str, Any]:
        """`params.target` for this server."""
        creds = {"user": self.user, "password": self.password} if self.user else {}
        return {"host": self.host, "port": self.port, **creds, **extra}

    def client(self) -> Any:
        """A pymongo client of the test's own, to set up and check data behind the executor's back."""
        import pymongo

        creds: dict[str, Any] = (
            {"username": self.user, "password": self.password, "authSource": "admin"} if self.user else {}
        )
        return pymongo.MongoClient(self.host, self.port, serverSelectionTimeoutMS=10_000, **creds)


@contextlib.contextmanager
def running_mongo() -> Iterator[MongoServer]:
    """The server from the environment, else a fresh nx-27017 process that is killed afterwards."""
    url = os.environ.get(ENV)
    if url:
        parts = urlsplit(url)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        server = MongoServer(parts.hostname or "127.0.0.1", parts.port or 27017, user, password)
        client = server.client()
        try:
            client.admin.command("ping")
        except Exception as exc:  # unreachable, or the account is refused
            unavailable(f"the MongoDB at {ENV}", exc)
        finally:
            client.close()
        yield server
        return
    exe = Path(sys.executable).with_name("nx-27017")
    if not exe.exists():
        unavailable("nx-27017", f"{exe} is not installed (uv sync --group dev)")
    with _nx_27017(exe) as server:
        yield server


@contextlib.contextmanager
def _nx_27017(exe: Path) -> Iterator[MongoServer]:
    with tempfile.TemporaryDirectory(prefix="tiangong-nx-") as tmp:
        yield from _run_nx(exe, Path(tmp))


def _run_nx(exe: Path, workdir: Path) -> Iterator[MongoServer]:
    port = free_port()
    args = [str(exe), "--host", "127.0.0.1", "-p", str(port), "--data-dir", "memory"]
    # Its own log and pid files: the defaults in /tmp are shared with any other nx-27017 on the machine.
    args += ["--log-file", str(workdir / "nx.log"), "--pid-file", str(workdir / "nx.pid")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=workdir)
    listening = threading.Event()
    output: list[str] = []

    def watch() -> None:
        # Reads stderr to the end, so the server never blocks on a full pipe after it is up.
        assert proc.stderr is not None
        for line in proc.stderr:
            output.append(line.rstrip())
            if f"Listening on 127.0.0.1:{port}" in line:
                listening.set()
        listening.set()  # exited: wake the waiter, which sees the exit code

    watcher = threading.Thread(target=watch, name="nx-27017-stderr", daemon=True)
    watcher.start()
    try:
        if not listening.wait(START_SECONDS) or proc.poll() is not None:
            unavailable("nx-27017", f"did not start (exit {proc.poll()}): {' | '.join(output[-5:])}")
        yield MongoServer("127.0.0.1", port)
    finally:
        stop_server(proc, watcher, proc.stderr)
