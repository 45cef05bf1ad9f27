"""Real processes for end-to-end tests: a cloud (uvicorn on a free port) and agent processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "test-admin-token"
AGENT = "test-agent-token"
"""The cloud's bootstrap registration token (TIANGONG_AGENT_TOKEN): agents register with it."""
REGISTER = "/api/v1/agents/register"


class AgentClient(httpx.Client):
    """An HTTP client speaking the agent protocol as a test's scripted agent.

    It starts with the registration token; once it registers, it holds the agent token the cloud handed
    out, as a real agent does. When the id is registered already (a module-scoped cloud, a second
    process of a pool), an admin issues it a token for that id first.
    """

    def __init__(self, base_url: str, timeout: float = 60, token: str = AGENT) -> None:
        super().__init__(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def post(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        r = super().post(url, **kwargs)
        if str(url) != REGISTER:
            return r
        if r.status_code == 409 and "already registered" in r.text:
            agent_id = kwargs["json"]["agent_id"]
            issued = httpx.post(
                f"{self.base_url}/api/v1/agents/{agent_id}/tokens",
                json={"name": "test"},
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            assert issued.status_code == 201, issued.text
            self.headers["Authorization"] = f"Bearer {issued.json()['token']}"
            r = super().post(url, **kwargs)
        if r.status_code == 200 and r.json().get("agent_token"):
            self.headers["Authorization"] = f"Bearer {r.json()['agent_token']}"
        return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak(edges: list[tuple[Any, int]]) -> int:
    """The most things alive at one instant, from (instant, +1 for a start or -1 for an end) pairs; at the
    same instant an end sorts first: a slot freed is a slot reused."""
    alive = most = 0
    for _, step in sorted(edges):
        alive += step
        most = max(most, alive)
    return most


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout`. Used on conditions, not time."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class AgentProc:
    proc: subprocess.Popen[bytes]
    agent_id: str
    data_dir: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        _stop(self.proc, sig, timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class ServerThread:
    """The real cloud (create_app under our uvicorn server, on a free port) in a thread of the test process.

    Starting a cloud process costs seconds of imports; API-contract tests do not need the process, only
    the server. Tests that kill, signal or inspect the cloud process use a process (`Cloud(process=True)`).
    """

    def __init__(self, env: dict[str, str], data_dir: Path, port: int) -> None:
        from cloud.server import build_server
        from cloud.settings import CloudSettings

        # Settings come from TIANGONG_* variables, as in the process: this cloud's, and no other's.
        ours = {k: v for k, v in env.items() if k.startswith("TIANGONG_")}
        others = [k for k in os.environ if k.startswith("TIANGONG_") and k not in ours]
        with mock.patch.dict(os.environ, ours):
            for k in others:
                del os.environ[k]  # put back when the patch ends
            settings = CloudSettings(data_dir=data_dir)
        self.server = build_server(settings, "127.0.0.1", port)
        self.loop: Any = None
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"cloud:{port}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.loop = self.server.config.get_loop_factory()()  # type: ignore[misc]
        try:
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # reported by the harness when the server is waited for
            self.failure = exc
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def dead(self) -> bool:
        return not self.thread.is_alive()

    def stop(self) -> None:
        """As SIGTERM does: wake the long-polls, let uvicorn finish its requests, run the lifespan's end."""
        if self.thread.is_alive() and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.server.handle_exit, signal.SIGTERM, None)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the cloud's server thread did not stop"


@dataclass
class Cloud:
    """A cloud (in a server thread, or a process when `process=True`) and an admin client for it."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: bool = False
    proc: subprocess.Popen[bytes] | None = None
    thread: ServerThread | None = None
    agents: list[AgentProc] = field(default_factory=list)
    issued: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return self.env.get("TIANGONG_DATABASE_URL") or f"sqlite:///{self.data_dir / 'tiangong.db'}"

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Read the cloud's database directly (SQLite or PostgreSQL), as an operator or a backup would."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(statement))]
        finally:
            engine.dispose()

    def start(self) -> Cloud:
        if self.process:
            cmd = [sys.executable, "-m", "cli.main", "cloud", "--port", str(self.port)]
            self.proc = subprocess.Popen([*cmd, "--data-dir", str(self.data_dir)], cwd=ROOT, env=self.env)
        else:
            self.thread = ServerThread(self.env, self.data_dir, self.port)
        wait_for(self._ready, 60, "cloud /readyz")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=330)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"cloud exited with {self.proc.returncode}")
        if self.thread is not None and self.thread.dead:
            raise AssertionError(f"cloud server thread ended: {self.thread.failure!r}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.thread is not None:
            assert sig == signal.SIGTERM, "only a cloud process can be killed: use Cloud(process=True)"
            self.thread.stop()
            self.thread = None
            self.http.close()
        if self.proc is not None:
            _stop(self.proc, sig)
            self.http.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def agent(
        self, agent_id: str = "local", max_concurrency: int = 4, wait_online: bool = True, **env: str
    ) -> AgentProc:
        """Start an agent process for `agent_id` and wait until the cloud shows it online."""
        data_dir = self.data_dir / f"agent-{agent_id}-{len(self.agents)}"
        cmd = [
            sys.executable,
            "-m",
            "cli.main",
            "agent",
            "--server",
            self.url,
            "--agent-id",
            agent_id,
            "--max-concurrency",
            str(max_concurrency),
            "--data-dir",
            str(data_dir),
        ]
        if any(a.agent_id == agent_id for a in self.agents) and "TIANGONG_AGENT_TOKEN" not in env:
            # Another process of this agent id registered already: as for a pool in production, this one
            # gets the id's agent token (an admin issues it) instead of registering the id a second time.
            env["TIANGONG_AGENT_TOKEN"] = self.agent_token(agent_id)
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **env})
        handle = AgentProc(proc, agent_id, data_dir)
        self.agents.append(handle)
        if wait_online:
            wait_for(lambda: self._online(agent_id, proc), 30, f"agent {agent_id} online")
        return handle

    def scripted(self, name: str, executors: list[str] | None = None, timeout: float = 60) -> AgentClient:
        """A scripted agent (the protocol spoken by the test), registered under `name` made into a valid
        agent id (a test's node name has brackets); the id is in its `X-Agent-Id` header."""
        agent_id = re.sub(r"[^\w.:@-]", ".", name)[:100]
        client = AgentClient(self.url, timeout=timeout)
        body: dict[str, Any] = {"agent_id": agent_id}
        if executors is not None:
            body["executors"] = executors
        r = client.post(REGISTER, json=body)
        assert r.status_code == 200, r.text
        client.headers["X-Agent-Id"] = agent_id
        return client

    def rpc(self, method: str, **params: Any) -> dict[str, Any]:
        """One JSON-RPC call (the token goes in `params.token`); the whole answer."""
        r = httpx.post(f"{self.url}/api/rpc", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def agent_token(self, agent_id: str) -> str:
        """An agent token for `agent_id`, issued by the admin (one per id and cloud process)."""
        if agent_id not in self.issued:
            r = self.http.post(f"/api/v1/agents/{agent_id}/tokens", json={"name": "test pool"})
            assert r.status_code == 201, r.text
            self.issued[agent_id] = r.json()["token"]
        return self.issued[agent_id]

    def _online(self, agent_id: str, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode}")
        r = self.http.get(f"/api/v1/agents/{agent_id}")
        return r.status_code == 200 and r.json()["status"] == "online"

    def close(self) -> None:
        for a in self.agents:
            a.stop(timeout=10)
        self.stop()

    # Conveniences used by the tests.
    def create(self, **body: Any) -> httpx.Response:
        body.setdefault("agent_id", "local")
        return self.http.post("/api/v1/tasks", json=body)

    def run(self, **body: Any) -> dict[str, Any]:
        """Create a task synchronously and return it (asserting 201)."""
        body.setdefault("sync", True)
        body.setdefault("timeout", 60)
        r = self.create(**body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/tasks/{task_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def logs(self, task_id: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            r = self.http.get(f"/api/v1/tasks/{task_id}/logs", params={"after": after, "limit": 1000, **params})
            assert r.status_code == 200, r.text
            page = r.json()
            out.extend(page)
            if len(page) < 1000:
                return out
            after = page[-1]["id"]

    def wait_final(self, task_id: str, timeout: float = 60) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (t := self.task(task_id))["status"] not in ("pending", "running") and t,
                timeout,
                f"{task_id} to finish",
            )
        )


def cloud_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIANGONG_")}
    if "TIANGONG_AGENT_CHANNEL" in os.environ:  # the agents' transport for a whole run: auto, websocket or http
        env["TIANGONG_AGENT_CHANNEL"] = os.environ["TIANGONG_AGENT_CHANNEL"]
    env.update({"TIANGONG_ADMIN_TOKEN": ADMIN, "TIANGONG_AGENT_TOKEN": AGENT, "PYTHONUNBUFFERED": "1"})
    env.update(overrides)
    return env
