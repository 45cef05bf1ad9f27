"""Every registered type keeps the executor contract: `validate` imports no driver, a cancel stops a long
run within a second, and a short deadline ends one as `timeout`.

Long runs use real things: a sleeping process, MariaDB's `SELECT SLEEP`, PostgreSQL's `pg_sleep`, a local
HTTP server that holds its answer, a TCP listener whose queue is full (connects hang), the fake Kubernetes
API with a rollout that never finishes, and for mongo and clickhouse a server that accepts connections and
never answers (the run hangs while connecting: no statement of theirs can be made to run long on the local
stand-ins). A type with no such run here is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from executors.registry import get_executor, known_types
from tests.integration.db.conftest import MariaDb, PgDb, mariadb, mariadb_account, pg  # noqa: F401 (fixtures)
from tests.integration.k8s.conftest import Cluster, fake_cluster  # noqa: F401 (fixture)
from tests.integration.k8s.manifests import NEVER_PULLS, as_yaml, deployment
from tests.unit.executors.harness import Harness, make_task
from wire.tasks import Assignment, TaskStatus

DRIVERS = (
    "pymysql", "psycopg", "psycopg_pool", "sqlalchemy", "clickhouse_driver", "clickhouse_connect", "pymongo",
    "bson", "elasticsearch", "opensearchpy", "kubernetes", "httpx", "icmplib",
)  # fmt: skip
"""Modules only an agent's run may import; the cloud imports executors to validate requests."""

MONGO_INSERT = '{"operation": "insert", "collection": "c", "documents": [{}]}'
DEPLOY = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n"
VALID: dict[str, dict[str, Any]] = {
    "shell": {"command": "echo hi"},
    "python": {"command": "print('hi')"},
    "execute": {"params": {"cmd": "echo", "args": ["hi"]}},
    "file": {"file_id": "f1", "params": {"path": "/tmp/x", "mode": "0644"}},
    "api": {"command": "POST", "params": {"url": "http://example.com/", "body": {"a": 1}}},
    "http_request": {"params": {"url": "https://example.com/", "method": "PUT", "body": "x"}},
    "ping": {"command": "example.com", "params": {"method": "tcp", "port": 443}},
    "mysql": {"command": "UPDATE t SET a = 1 WHERE id = 2", "params": {"target": {"host": "db"}}},
    "doris": {"command": "INSERT INTO t VALUES (1)", "params": {"target": {"host": "db"}}},
    "postgres": {"command": "SELECT 1", "params": {"target": {"host": "db"}}},
    "clickhouse": {"command": "SELECT 1", "params": {"target": {"host": "db", "protocol": "http"}}},
    "mongo": {
        "command": MONGO_INSERT,
        "params": {"connection": "m"},
    },
    "elasticsearch": {"command": '{"operation": "index", "index": "i", "doc": {}}'},
    "k8s": {"command": DEPLOY, "params": {"operation": "apply", "wait": True}},
    "web_shell": {"params": {"url": "wss://example.com/auto_gen", "terminal_id": str(uuid.UUID(int=1))}},
}
CANCEL_AFTER_S = 1.0
"""How long a run goes before the cancel: long enough to be inside its long part."""
SHORT_DEADLINE_S = 1.5


def test_every_registered_type_has_a_case_here() -> None:
    assert set(known_types()) <= set(VALID), "add the new type's cases to this contract test"


@pytest.mark.parametrize("type_name", known_types())
def test_validate_imports_no_driver(type_name: str) -> None:
    request = {"type": type_name, **VALID[type_name]}
    code = (
        "import sys\n"
        "from executors.registry import get_executor\n"
        "from wire.tasks import TaskRequest\n"
        f"req = TaskRequest.model_validate({request!r})\n"
        "get_executor(req.type).validate(req)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {DRIVERS!r})\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[3])


# --- long runs -----------------------------------------------------------------------------------------------


@dataclass
class LongRun:
    """One task that runs long, what its context needs, and what to release once it has ended."""

    task: Assignment
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    context: type[Harness] = Harness
    release: Callable[[], None] = lambda: None


class SlowFetchHarness(Harness):
    """A RunContext whose file download never finishes (the agent's fetch is the boundary here)."""

    async def fetch_file(self, file_id: str) -> Path:
        await asyncio.sleep(60)
        return await super().fetch_file(file_id)


class SlowHttp:
    """A local HTTP server that holds every answer until released."""

    def __init__(self) -> None:
        released = self.released = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                released.wait(60)
                self.send_response(200)
                self.end_headers()

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class Silent:
    """A TCP server that accepts connections and never answers; `full=True` instead never accepts and
    keeps its queue full, so a connect itself hangs."""

    def __init__(self, full: bool = False) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = int(self.listener.getsockname()[1])
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        if full:
            for _ in range(2):  # a backlog of 0 queues one: the next SYNs are dropped
                client = socket.socket()
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", self.port))
                self.held.append(client)
        else:
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        """Drop every connection: a worker thread still waiting on one then returns."""
        self.stop.set()
        for conn in self.held:
            conn.close()
        self.listener.close()


class HeldSocket:
    """A WebSocket server that accepts and then says nothing: a web_shell session nobody types into."""

    def __init__(self) -> None:
        from websockets.sync.server import ServerConnection, serve

        def hold(conn: ServerConnection) -> None:
            with contextlib.suppress(Exception):
                for _ in conn:
                    pass

        self.server = serve(hold, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/shell"

    def close(self) -> None:
        self.server.shutdown()


def _long_run(type_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> LongRun:
    if type_name == "shell":
        return LongRun(make_task("sleep 30"))
    if type_name == "python":
        return LongRun(make_task("import time; time.sleep(30)", type="python"))
    if type_name == "execute":
        return LongRun(make_task(type="execute", cmd="sleep", args=["30"]))
    if type_name == "file":
        return LongRun(make_task(type="file", file_id="f1", path=str(tmp_path / "out")), context=SlowFetchHarness)
    if type_name in ("api", "http_request"):
        http = SlowHttp()
        return LongRun(make_task(type=type_name, url=http.url), release=http.close)
    if type_name == "ping":
        full = Silent(full=True)
        task = make_task("127.0.0.1", type="ping", method="tcp", port=full.port, count=100)
        return LongRun(task, release=full.close)
    if type_name in ("mysql", "doris"):
        # doris speaks MySQL's protocol: MariaDB runs its statements as a Doris FE would.
        db: MariaDb = request.getfixturevalue("mariadb")
        return LongRun(make_task("SELECT SLEEP(30)", type=type_name, target=db.target()))
    if type_name == "postgres":
        pgdb: PgDb = request.getfixturevalue("pg")
        return LongRun(make_task("SELECT pg_sleep(30)", type="postgres", target=pgdb.target()))
    if type_name in ("mongo", "clickhouse"):
        silent = Silent()
        target = {
            "host": "127.0.0.1",
            "port": silent.port,
            **({"protocol": "http"} if type_name == "clickhouse" else {}),
        }
        command = MONGO_INSERT if type_name == "mongo" else "SELECT 1"
        return LongRun(make_task(command, type=type_name, target=target), release=silent.close)
    if type_name == "k8s":
        cluster: Cluster = request.getfixturevalue("fake_cluster")
        task = make_task(as_yaml(deployment("slow", image=NEVER_PULLS)), type="k8s", wait=True)
        return LongRun(task, config=cluster.agent_config())
    if type_name == "web_shell":
        far_side = HeldSocket()
        return LongRun(make_task(type="web_shell", url=far_side.url), release=far_side.close)
    pytest.skip(
        f"{type_name}: no operation runs long on the local stand-in, and a server that never answers would"
        " also hold the interrupt request the executor sends, so a run here proves nothing about a stop"
    )


def _run(long: LongRun, tmp_path: Path, timeout: float, cancel_after: float | None) -> tuple[Any, float]:
    """Run the task; returns its outcome and the seconds from the stop (cancel or deadline) to its end."""
    executor = get_executor(long.task.type)

    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        ctx = long.context(workdir=tmp_path, deadline=loop.time() + timeout, config=long.config, files=long.files)
        stopped_at = ctx.deadline

        def cancel() -> None:
            nonlocal stopped_at
            stopped_at = loop.time()
            ctx.cancel_event.set()

        if cancel_after is not None:
            loop.call_later(cancel_after, cancel)
        try:
            out = await executor.run(long.task, ctx)
            return out, loop.time() - stopped_at
        finally:
            long.release()  # lets a worker thread still waiting on a server return, so the loop can close

    return asyncio.run(main())


@pytest.fixture
def long_run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], LongRun]]:
    made: list[LongRun] = []

    def make(type_name: str) -> LongRun:
        made.append(_long_run(type_name, request, tmp_path))
        return made[-1]

    yield make
    for long in made:
        long.release()


@pytest.mark.parametrize("type_name", known_types())
def test_cancel_stops_a_long_run_within_a_second(
    type_name: str, long_run: Callable[[str], LongRun], tmp_path: Path
) -> None:
    long = long_run(type_name)
    started = time.monotonic()
    out, after_stop = _run(long, tmp_path, timeout=60, cancel_after=CANCEL_AFTER_S)
    assert out.status is TaskStatus.canceled, (out.status, out.error)
    assert time.monotonic() - started >= CANCEL_AFTER_S  # it was still running when canceled
    assert after_stop <= 1.0, f"{type_name} took {after_stop:.2f} s to stop after the cancel"


@pytest.mark.parametrize("type_name", known_types())
def test_a_short_deadline_ends_a_long_run_as_timeout(
    type_name: str, long_run: Callable[[str], LongRun], tmp_path: Path
) -> None:
    long = long_run(type_name)
    out, after_deadline = _run(long, tmp_path, timeout=SHORT_DEADLINE_S, cancel_after=None)
    assert out.status is TaskStatus.timeout, (out.status, out.error)
    assert after_deadline <= 2.0, f"{type_name} ended {after_deadline:.2f} s after its deadline"
