"""Retention on a real cloud (SQLite and PostgreSQL): finished tasks past TIANGONG_RETENTION_DAYS disappear
from the API with their logs, while recent and unfinished ones stay."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, text

from tests.e2e.harness import AgentClient, Cloud, wait_for


def run_task(cloud: Cloud, agent: AgentClient, lines: int) -> str:
    """A task the scripted agent claims, logs `lines` lines for and finishes: its id."""
    agent_id = agent.headers["X-Agent-Id"]
    task = cloud.create(agent_id=agent_id, type="shell", command="true").json()
    [got] = agent.post(f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 5}).json()
    assert got["id"] == task["id"]
    logged = [{"seq": i, "message": f"line {i}"} for i in range(1, lines + 1)]
    body = {"task_token": got["task_token"], "status": "success", "exit_code": 0, "log_lines": lines, "lines": logged}
    r = agent.post(f"/api/v1/agent/tasks/{got['id']}/result", json=body)
    assert r.status_code == 200, r.text
    return str(task["id"])


def age(cloud: Cloud, task_ids: list[str], days: int) -> None:
    """Move tasks `days` into the past (created, and ended if they have), as if they had run then."""
    then = (datetime.now(UTC) - timedelta(days=days)).replace(tzinfo=None)
    engine = create_engine(cloud.database_url)
    try:
        with engine.begin() as conn:
            for task_id in task_ids:
                n = int(task_id.removeprefix("task-"))
                ended = "CASE WHEN finished_at IS NULL THEN NULL ELSE :t END"
                conn.execute(
                    text(f"UPDATE tasks SET created_at = :t, finished_at = {ended} WHERE id = :n"), {"t": then, "n": n}
                )
    finally:
        engine.dispose()


def gone(cloud: Cloud, task_id: str) -> bool:
    return cloud.http.get(f"/api/v1/tasks/{task_id}").status_code == 404


def test_old_finished_tasks_are_deleted_with_their_logs_and_the_rest_is_kept(
    make_cloud: Callable[..., Any], request: Any
) -> None:
    cloud: Cloud = make_cloud(retention_days=30, retention_interval_seconds=0.1, retention_batch=2)
    with closing(cloud.scripted(request.node.name, executors=["shell"])) as agent:
        agent_id = agent.headers["X-Agent-Id"]
        old = [run_task(cloud, agent, lines=5) for _ in range(3)]
        recent = run_task(cloud, agent, lines=2)
        running = cloud.create(agent_id=agent_id, type="shell", command="sleep 1").json()["id"]
        [claimed] = agent.post(f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 5}).json()
        assert claimed["id"] == running
    pending = cloud.create(agent_id=agent_id, type="shell", command="true").json()["id"]

    age(cloud, [*old, running, pending], days=40)

    wait_for(lambda: all(gone(cloud, t) for t in old), 30, "the old finished tasks to be deleted")
    n_old = ",".join(t.removeprefix("task-") for t in old)
    assert cloud.sql(f"SELECT count(*) FROM task_logs WHERE task_id IN ({n_old})") == [(0,)]
    assert [line["message"] for line in cloud.logs(recent)] == ["line 1", "line 2"]
    assert cloud.task(running)["status"] == "running"
    assert cloud.task(pending)["status"] == "pending"
    listed = {t["id"] for t in cloud.http.get("/api/v1/tasks", params={"page_size": 100}).json()["list"]}
    assert listed == {recent, running, pending}
