"""`tiangong up` (what `make run` starts): a port already taken is said at once; an agent that dies is
reported and started again, and what it left running is reported lost."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.e2e.harness import ROOT, free_port, wait_for


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TIANGONG_")}


def test_a_port_in_use_is_named_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in ("up", "cloud"):
            cmd = [sys.executable, "-m", "cli.main", command, "--port", str(port), "--data-dir", str(tmp_path)]
            done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
            assert done.returncode == 1 and "Traceback" not in done.stderr
            assert done.stderr.strip().splitlines() == [
                f"error: port {port} on 127.0.0.1 is already in use (another `tiangong up` or another server): "
                "stop it, or choose another port: --port 9090 (make run PORT=9090)"
            ]
    assert not (tmp_path / "admin.token").exists()  # refused before anything was made


def _agent_pid(up: subprocess.Popen[str]) -> int:
    children = Path(f"/proc/{up.pid}/task/{up.pid}/children").read_text().split()
    return next(int(p) for p in children if b"agent" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0"))


def test_up_restarts_an_agent_that_dies(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "cli.main", "up", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as up:
        lines: queue.Queue[str] = queue.Queue()
        assert up.stderr is not None
        stream = up.stderr

        def pump() -> None:
            for ln in stream:
                lines.put(ln)

        threading.Thread(target=pump, daemon=True).start()
        try:
            token = wait_for(lambda: _read(tmp_path / "data" / "admin.token"), 90, "the admin token")
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            wait_for(lambda: _online(http), 90, "agent local online")
            task = http.post("/api/v1/tasks", json={"agent_id": "local", "type": "shell", "command": "sleep 60"}).json()
            wait_for(lambda: http.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "running", 30, "running")

            os.kill(_agent_pid(up), signal.SIGKILL)
            wait_for(lambda: _saw(lines, "agent local exited (killed by SIGKILL): starting it again"), 30, "report")
            ended = wait_for(lambda: _final(http, task["id"]), 60, f"{task['id']} reported lost")
            assert ended["status"] == "failed" and "the agent restarted" in ended["error"]
            again = http.post("/api/v1/tasks", json={"agent_id": "local", "type": "shell", "command": "echo back",
                                                     "sync": True, "timeout": 60}).json()  # fmt: skip
            assert (again["status"], again["result"]) == ("success", "back\n")
            http.close()
        finally:
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=60) == 0


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _online(http: httpx.Client) -> bool:
    try:
        r = http.get("/api/v1/agents/local")
    except httpx.TransportError:  # the token file is written before the cloud listens
        return False
    return r.status_code == 200 and r.json()["status"] == "online"


def _saw(lines: queue.Queue[str], words: str) -> bool:
    while not lines.empty():
        if words in lines.get():
            return True
    return False


def _final(http: httpx.Client, task_id: str) -> dict[str, object] | None:
    task = dict(http.get(f"/api/v1/tasks/{task_id}").json())
    return task if task["status"] not in ("pending", "running") else None
