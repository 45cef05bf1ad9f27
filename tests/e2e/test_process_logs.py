"""The cloud's and the agent's own logs, as a log shipper reads them: JSON lines on stderr, each carrying the
request id (echoed to the caller in X-Request-ID) and the task id it concerns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.e2e.harness import ADMIN, ROOT, cloud_env, free_port, wait_for


def _records(path: Path) -> list[dict[str, Any]]:
    # Every line must be JSON: one that is not fails the test here.
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_cloud_and_agent_write_json_lines_with_request_and_task_ids(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = cloud_env(TIANGONG_LOG_FORMAT="json")
    cloud_log, agent_log = tmp_path / "cloud.log", tmp_path / "agent.log"
    procs: list[subprocess.Popen[bytes]] = []
    with cloud_log.open("wb") as cloud_err, agent_log.open("wb") as agent_err:
        cmd = [sys.executable, "-m", "cli.main", "cloud", "--port", str(port), "--data-dir", str(tmp_path / "c")]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=cloud_err))
        agent = [sys.executable, "-m", "cli.main", "agent", "--server", url, "--agent-id", "logs-1"]
        procs.append(subprocess.Popen([*agent, "--data-dir", str(tmp_path / "a")], cwd=ROOT, env=env, stderr=agent_err))
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    try:

        def online() -> bool:
            try:
                return http.get("/api/v1/agents/logs-1").json().get("status") == "online"
            except httpx.TransportError:
                return False

        wait_for(online, 60, "agent online")
        r = http.post(
            "/api/v1/tasks",
            json={"agent_id": "logs-1", "type": "shell", "command": "echo hi", "sync": True},
            headers={"X-Request-ID": "ci-job-42.step-3"},
        )
        assert r.status_code == 201 and r.json()["status"] == "success"
        assert r.headers["x-request-id"] == "ci-job-42.step-3"  # the caller's id comes back
        task_id = r.json()["id"]
        got = http.get(f"/api/v1/tasks/{task_id}", headers={"X-Request-ID": "bad id\twith spaces"})
        generated = got.headers["x-request-id"]
        assert generated != "bad id\twith spaces" and len(generated) == 16  # a new one, not the unsafe text

        def logged() -> bool:
            return any(d.get("task_id") == task_id for d in _records(agent_log)) and any(
                d.get("request_id") == generated for d in _records(cloud_log)
            )

        wait_for(logged, 20, "both processes logged the task")
    finally:
        http.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    cloud, agents = _records(cloud_log), _records(agent_log)
    created = [d for d in cloud if d.get("request_id") == "ci-job-42.step-3"]
    assert (
        created and created[0]["logger"] == "tiangong.access" and created[0]["msg"].startswith("POST /api/v1/tasks 201")
    )
    read = next(d for d in cloud if d.get("request_id") == generated)
    assert read["task_id"] == task_id and read["msg"].startswith(f"GET /api/v1/tasks/{task_id} 200")
    assert any(d["logger"].startswith("uvicorn") for d in cloud)  # the server's own lines are JSON too
    ran = [d["msg"] for d in agents if d.get("task_id") == task_id]
    assert len(ran) == 1 and ran[0].startswith(f"{task_id} (shell, attempt 1) ended success in ")  # one per task
    assert all({"ts", "level", "logger", "msg"} <= set(d) for d in cloud + agents)
    # The agents' own long-polls are not in the access log by default.
    assert not any("/claim" in d["msg"] for d in cloud if d["logger"] == "tiangong.access")
