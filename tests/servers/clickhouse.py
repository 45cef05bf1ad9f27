"""ClickHouse for tests: the machine's clickhouse-server for the native protocol (Debian's 18.16 on
127.0.0.1:9000, started by .ci/run), the chdb HTTP stand-in (tests/servers/chdb_http.py: ClickHouse 26.x
in a process of its own) for the HTTP protocol, and the server at `TIANGONG_TEST_CLICKHOUSE_URL`
(`clickhouse://user:pw@host:9000` for native, `http(s)://user:pw@host:8123` for HTTP) when it is set.

The stand-in is needed because clickhouse-connect cannot talk to 18.16: its handshake reads a column of
system.settings that 18.16 does not have.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.servers import free_port, stop_server, unavailable

ENV = "TIANGONG_TEST_CLICKHOUSE_URL"
START_SECONDS = 60.0
HTTP_PASSWORD = "Tg-ch-s3cret-77"
"""The stand-in's password for `default`; it must never show in results, errors or logs."""
WRITE_INFO_REVISION = 54420
"""The native protocol revision from which the server reports written rows (18.16 is 54412)."""


@dataclass
class ClickHouseServer:
    """Where a server listens, over which protocol, and the account to use."""

    name: str
    protocol: str
    host: str
    port: int
    user: str = "default"
    password: str = ""
    scheme: str = "http"
    version: str = ""
    reports_written_rows: bool = True
    streams: bool = True
    """Whether a result arrives block by block (the stand-in hands over a whole result at once)."""
    _admin: Any = field(default=None, repr=False)

    def target(self, database: str | None, **extra: Any) -> dict[str, Any]:
        """`params.target` for this server and `database`."""
        out = {"host": self.host, "port": self.port, "protocol": self.protocol, "user": self.user, **extra}
        if self.password:
            out["password"] = self.password
        if self.scheme == "https":
            out["scheme"] = "https"
        if database:
            out["database"] = database
        return out

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run `sql` with a client of the test's own (the protocol's driver, not the executor)."""
        if self._admin is None:
            self._admin = self._connect()
        if self.protocol == "native":
            return list(self._admin.execute(sql))
        return [tuple(r) for r in self._admin.query(sql).result_rows]

    def running(self, fragment: str) -> int:
        """How many queries containing `fragment` the server is running now."""
        rows = self.query(
            "SELECT count() FROM system.processes"
            f" WHERE position(query, '{fragment}') > 0 AND position(query, 'system.processes') = 0"
        )
        return int(rows[0][0])

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database `t_<random>`, dropped afterwards."""
        name = f"t_{uuid.uuid4().hex[:10]}"
        self.query(f"CREATE DATABASE {name}")
        try:
            yield name
        finally:
            self.query(f"DROP DATABASE IF EXISTS {name}")

    def close(self) -> None:
        if self._admin is not None:
            if self.protocol == "native":
                self._admin.disconnect()
            else:
                self._admin.close()
            self._admin = None

    def _connect(self) -> Any:
        if self.protocol == "native":
            from clickhouse_driver import Client

            secure = self.scheme == "https"
            return Client(self.host, self.port, user=self.user, password=self.password, secure=secure)
        from clickhouse_connect.driver.httpclient import HttpClient

        return HttpClient(self.scheme, self.host, self.port, self.user, self.password, None, dedicated_pool=True)


def native_server() -> ClickHouseServer:
    """The machine's clickhouse-server on 127.0.0.1:9000 (skipped locally, failed in CI, when it is down)."""
    server = ClickHouseServer("native-local", "native", "127.0.0.1", 9000)
    return _checked(server, "clickhouse-server on 127.0.0.1:9000 (.ci/run starts it)")


def env_server() -> ClickHouseServer:
    """The server named by TIANGONG_TEST_CLICKHOUSE_URL."""
    parts = urlsplit(os.environ[ENV])
    native = parts.scheme in ("clickhouse", "native", "tcp")
    scheme = "https" if parts.scheme in ("https", "clickhouses") else "http"
    default_port = (9440 if scheme == "https" else 9000) if native else (8443 if scheme == "https" else 8123)
    server = ClickHouseServer(
        f"env-{'native' if native else 'http'}",
        "native" if native else "http",
        parts.hostname or "127.0.0.1",
        parts.port or default_port,
        unquote(parts.username) if parts.username else "default",
        unquote(parts.password) if parts.password else "",
        scheme,
    )
    return _checked(server, f"the ClickHouse at {ENV}")


def _checked(server: ClickHouseServer, what: str) -> ClickHouseServer:
    try:
        server.version = str(server.query("SELECT version()")[0][0])
        if server.protocol == "native":
            revision = server._admin.connection.server_info.revision
            server.reports_written_rows = revision >= WRITE_INFO_REVISION
    except Exception as exc:  # refused, unknown host, wrong account
        server.close()
        unavailable(what, exc)
    return server


@contextlib.contextmanager
def chdb_http_server(*options: str) -> Iterator[ClickHouseServer]:
    """The chdb HTTP stand-in in a process of its own on a free port, with a password; killed afterwards.
    `options` are the stand-in's own (`--hold-kills`)."""
    try:
        import chdb  # noqa: F401  (a dev dependency: only checks it is installed)
    except ImportError as exc:
        unavailable("chdb (the HTTP stand-in's engine)", exc)
    port = free_port()
    script = Path(__file__).with_name("chdb_http.py")
    args = [sys.executable, str(script), "--port", str(port), "--password", HTTP_PASSWORD, *options]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listening = threading.Event()
    output: list[str] = []

    def watch() -> None:
        # Reads the output to the end, so the server never blocks on a full pipe after it is up.
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.rstrip())
            if line.startswith("listening on "):
                listening.set()
        listening.set()  # exited: wake the waiter, which sees the exit code

    watcher = threading.Thread(target=watch, name="chdb-http-output", daemon=True)
    watcher.start()
    server = ClickHouseServer("http-chdb", "http", "127.0.0.1", port, password=HTTP_PASSWORD, streams=False)
    try:
        if not listening.wait(START_SECONDS) or proc.poll() is not None:
            unavailable("the chdb HTTP stand-in", f"did not start (exit {proc.poll()}): {' | '.join(output[-5:])}")
        yield _checked(server, "the chdb HTTP stand-in")
    finally:
        server.close()
        stop_server(proc, watcher, proc.stdout)
