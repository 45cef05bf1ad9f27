"""Several real processes for fault tests: cloud replicas on one database, agents that keep their data
dir across restarts, and SIGKILL or restart of any of them. Builds on tests/e2e/harness.py.

Every process writes its output to a log file of its own (`<name>.log` in the cluster's directory), so
a run with many processes stays readable and a test can wait on what a process said.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import httpx

from tests.e2e.harness import ADMIN, ROOT, Cloud, ServerThread, _stop, cloud_env, wait_for
from tests.faults.proxy import TcpProxy


class Replica(Cloud):
    """A cloud process whose output goes to a log file; it can be launched without waiting for it."""

    log_path: Path
    _log: IO[bytes] | None = None

    def launch(self) -> None:
        """Start the cloud (on the same port as before, when restarting); do not wait. A replica that
        is never killed (`process=False`) serves from a thread: no seconds of imports for a process."""
        if not self.process:
            self.thread = ServerThread(self.env, self.data_dir, self.port)
        else:
            cmd = [sys.executable, "-m", "cli.main", "cloud", "--port", str(self.port)]
            self._log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                [*cmd, "--data-dir", str(self.data_dir)],
                cwd=ROOT,
                env=self.env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=330)

    def wait_ready(self, timeout: float = 90) -> None:
        wait_for(self._ready, timeout, f"cloud on port {self.port} /readyz")

    def start(self) -> Replica:
        self.launch()
        self.wait_ready()
        return self

    @property
    def alive(self) -> bool:
        if self.thread is not None:
            return not self.thread.dead
        return self.proc is not None and self.proc.poll() is None

    @property
    def serving(self) -> bool:
        """Whether the process is up and answers /readyz (a relaunched one may still be starting)."""
        if not self.alive:
            return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, as a crash or an OOM kill."""
        assert self.process, "only a replica process can be killed: make the cluster with process=True"
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        super().stop(sig)
        if self._log is not None:
            self._log.close()
            self._log = None


class AgentProcess:
    """One agent process for `agent_id`, whose data dir (work dir, outbox) survives its restarts."""

    def __init__(self, agent_id: str, server: str, data_dir: Path, max_concurrency: int, env: dict[str, str]) -> None:
        self.agent_id, self.server, self.data_dir = agent_id, server, data_dir
        self.max_concurrency, self.env = max_concurrency, env
        self.log_path = data_dir.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> AgentProcess:
        cmd = [sys.executable, "-m", "cli.main", "agent", "--server", self.server, "--agent-id", self.agent_id]
        cmd += ["--max-concurrency", str(self.max_concurrency), "--data-dir", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to drain or report; its task processes are left running."""
        if self.proc is not None:
            _stop(self.proc, signal.SIGKILL, 10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is not None:
            _stop(self.proc, sig, timeout)

    def restart(self) -> AgentProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def registrations(self) -> int:
        """How many times this agent's processes have registered with the cloud (one per start, normally)."""
        return self.log().count("registered as ")

    def wait_registered(self, timeout: float = 60) -> None:
        """Wait until the latest start has registered (its recovery of a previous life is done by then)."""

        def check() -> bool:
            if not self.alive:
                raise AssertionError(f"agent {self.agent_id} exited:\n{self.log()[-3000:]}")
            return self.registrations() >= self.starts

        wait_for(check, timeout, f"agent {self.agent_id} to register")


class Cluster:
    """Cloud replicas sharing one database, data dir, tokens and secret key, plus agents and proxies.

    `database_url` None means SQLite in the shared data dir (then only one replica makes sense).
    `process=False` serves the replicas from threads of this process: for tests that never kill them.
    `settings` are cloud settings without the TIANGONG_ prefix, e.g. lease_seconds=3.
    """

    def __init__(
        self, root: Path, database_url: str | None = None, replicas: int = 1, process: bool = True, **settings: Any
    ) -> None:
        from cryptography.fernet import Fernet

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        extra = {f"TIANGONG_{k.upper()}": str(v) for k, v in settings.items()}
        if database_url:
            extra["TIANGONG_DATABASE_URL"] = database_url
        env = cloud_env(TIANGONG_SECRET_KEY=Fernet.generate_key().decode(), **extra)
        self.replicas = [Replica(root / "cloud", env, process=process) for _ in range(replicas)]
        for i, r in enumerate(self.replicas):
            r.log_path = root / f"cloud-{i}.log"
        self.agents: list[AgentProcess] = []
        self.proxies: list[TcpProxy] = []

    @property
    def a(self) -> Replica:
        return self.replicas[0]

    @property
    def b(self) -> Replica:
        return self.replicas[1]

    def start(self) -> Cluster:
        for r in self.replicas:
            r.start()
        return self

    def proxy(self, *replicas: Replica, record: bool = False) -> TcpProxy:
        """A started proxy in front of `replicas` (all of them when none are named)."""
        targets = replicas or tuple(self.replicas)
        p = TcpProxy([("127.0.0.1", r.port) for r in targets], record=record).start()
        self.proxies.append(p)
        return p

    def agent(
        self, agent_id: str, via: str | None = None, max_concurrency: int = 4, wait: bool = True, **env: str
    ) -> AgentProcess:
        """Start an agent process talking to `via` (a URL: a replica's or a proxy's; replica A by default)."""
        name = f"agent-{agent_id}-{len(self.agents)}"
        agent_env = cloud_env(**{f"TIANGONG_{k.upper()}": v for k, v in env.items()})
        if any(a.agent_id == agent_id for a in self.agents) and "agent_token" not in env:
            # A second process of this agent id: it shares the id's agent token, as a pool does.
            agent_env["TIANGONG_AGENT_TOKEN"] = self.a.agent_token(agent_id)
        agent = AgentProcess(agent_id, via or self.a.url, self.root / name, max_concurrency, agent_env).start()
        self.agents.append(agent)
        if wait:
            agent.wait_registered()
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.stop(timeout=10)
        for p in self.proxies:
            p.close()
        for r in self.replicas:
            r.stop()

    def log_tails(self, chars: int = 2000) -> str:
        """The end of every process's log, for a failing test's report."""
        parts = []
        for path in sorted(self.root.glob("*.log")):
            parts.append(f"----- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


def mark(marker: Path, event: str = "start") -> str:
    """A shell snippet appending `<task id> <event> <shell pid>` to `marker`: how fault tests count runs."""
    return f'echo "$TIANGONG_TASK_ID {event} $$" >> {marker}'


def marks(marker: Path, event: str = "start") -> dict[str, list[int]]:
    """Task id -> the pids of the runs that wrote `event` to `marker`, in the order they did."""
    out: dict[str, list[int]] = {}
    if marker.exists():
        for line in marker.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == event:
                out.setdefault(parts[0], []).append(int(parts[2]))
    return out


def pid_running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a killed orphan nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def kill_pid(pid: int) -> None:
    """Best effort: a task process a test left behind."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
