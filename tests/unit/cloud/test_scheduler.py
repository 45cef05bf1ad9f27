"""Firing schedules on SQLite and PostgreSQL: one task per firing however many transactions race for it,
the next run always after now (a cloud that was down for days fires once, or not at all with `missed:
skip`), and a firing that cannot make its task records why instead of failing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from cloud.access import ADMIN
from cloud.db.engine import Database
from cloud.db.models import AGENTS, SCHEDULES, TASKS
from cloud.hub import Hub
from cloud.sealing import Sealer
from cloud.services import schedules
from cloud.services.agents import AgentCache
from cloud.services.scheduler import Firing, due, fire
from executors.policy import CommandPolicy
from wire.schedules import ScheduleCreate

SEALER = Sealer([Fernet.generate_key()])
FIRING = Firing(AgentCache(ttl=0), SEALER, CommandPolicy(), default_expires_in=3600, grace_seconds=60)


def make(db: Database, cron: str = "0 3 * * *", **fields: Any) -> Any:
    task = {"agent_id": "a1", "type": "shell", "command": "echo hi", **fields.pop("task", {})}
    body = ScheduleCreate.model_validate(
        {"name": f"s-{cron}-{fields.get('missed', '')}", "cron": cron, "task": task, **fields}
    )
    with db.transaction() as conn:
        return schedules.create_schedule(conn, body, ADMIN, SEALER)


def tasks_of(db: Database, name: str) -> list[Any]:
    with db.transaction() as conn:
        return list(conn.execute(select(TASKS).where(TASKS.c.cron_source == name)).all())


def reread(db: Database, n: int) -> Any:
    with db.transaction() as conn:
        return schedules.fetch_or_404(conn, n)


def test_a_firing_creates_one_task_with_cron_source_and_moves_next_run_on(db: Database) -> None:
    row = make(db, task={"params": {"password": "hunter2-secret"}})
    now = row.next_run_at + timedelta(seconds=0.5)
    with db.transaction() as conn:
        assert due(conn, now, 10) == [(row.id, row.next_run_at)]
        task = fire(conn, row.id, row.next_run_at, now, FIRING)
    assert task is not None
    [stored] = tasks_of(db, row.name)
    assert stored.agent_id == "a1" and stored.command == "echo hi" and stored.status == "pending"
    assert stored.params["password"] != "hunter2-secret"  # sealed again, as any task's secrets are
    after = reread(db, row.id)
    assert after.runs == 1 and after.last_task_id == stored.id and after.last_error == ""
    assert after.next_run_at == row.next_run_at + timedelta(days=1)
    with db.transaction() as conn:  # the same planned run again: it was fired already
        assert fire(conn, row.id, row.next_run_at, now, FIRING) is None
    assert len(tasks_of(db, row.name)) == 1


@pytest.mark.parametrize("missed", ["run_once", "skip"])
def test_a_cloud_down_for_days_fires_once_or_skips_never_a_burst(db: Database, missed: str) -> None:
    row = make(db, missed=missed)
    now = row.next_run_at + timedelta(days=3, hours=1)  # three daily runs came and went
    with db.transaction() as conn:
        fire(conn, row.id, row.next_run_at, now, FIRING)
    after = reread(db, row.id)
    assert after.next_run_at > now and after.next_run_at - now < timedelta(days=1)
    with db.transaction() as conn:
        assert due(conn, now, 10) == []  # nothing left to catch up
    fired = tasks_of(db, row.name)
    if missed == "run_once":
        assert len(fired) == 1 and after.runs == 1
    else:
        assert fired == [] and after.runs == 0
        assert "missed" in after.last_error and "skip" in after.last_error


def test_skip_still_runs_a_firing_that_is_on_time(db: Database) -> None:
    row = make(db, missed="skip")
    with db.transaction() as conn:
        assert fire(conn, row.id, row.next_run_at, row.next_run_at + timedelta(seconds=5), FIRING) is not None


def test_once_fires_one_time_then_disables_itself(db: Database) -> None:
    row = make(db, cron="@once")
    assert row.next_run_at is not None
    now = row.next_run_at + timedelta(seconds=1)
    with db.transaction() as conn:
        assert fire(conn, row.id, row.next_run_at, now, FIRING) is not None
        assert due(conn, now + timedelta(days=400), 10) == []
    after = reread(db, row.id)
    assert not after.enabled and after.next_run_at is None and after.runs == 1


@pytest.mark.parametrize("change", ["disabled", "deleted"])
def test_a_disabled_or_deleted_agent_is_recorded_on_the_schedule(db: Database, change: str) -> None:
    row = make(db)
    with db.transaction() as conn:
        if change == "disabled":
            conn.execute(update(AGENTS).where(AGENTS.c.id == "a1").values(disabled=True))
        else:
            conn.execute(AGENTS.delete().where(AGENTS.c.id == "a1"))
        assert fire(conn, row.id, row.next_run_at, row.next_run_at, FIRING) is None
    after = reread(db, row.id)
    assert ("disabled" if change == "disabled" else "agent not found") in after.last_error
    assert after.next_run_at > row.next_run_at and after.runs == 0  # the schedule goes on
    assert tasks_of(db, row.name) == []


def test_racing_transactions_fire_each_run_once(db: Database) -> None:
    """Several threads, each with its own engine (as replicas have), fire the same planned run at once."""
    row = make(db, cron="* * * * * *")
    others = [Database(db.url, Hub()) for _ in range(4)]
    try:
        for _ in range(5):
            planned = reread(db, row.id).next_run_at
            start = threading.Barrier(len(others))
            won: list[bool] = []
            threads = [threading.Thread(target=race, args=(r, row.id, planned, start, won)) for r in others]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(won) == [False, False, False, True]
        assert len(tasks_of(db, row.name)) == 5 == reread(db, row.id).runs
    finally:
        for r in others:
            r.dispose()


def race(replica: Database, n: int, planned: datetime, start: threading.Barrier, won: list[bool]) -> None:
    """One contender: fire run `planned` of schedule `n` as soon as every contender is ready."""
    start.wait()
    try:
        with replica.transaction() as conn:
            won.append(fire(conn, n, planned, planned + timedelta(seconds=2), FIRING) is not None)
    except Exception:  # SQLite: a writer that lost the race may be refused (database is locked)
        won.append(False)


def test_first_run_honours_start_at_and_the_time_zone(db: Database) -> None:
    start = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    row = make(db, cron="0 3 * * *", timezone="Asia/Shanghai", start_at=start.isoformat())
    assert row.next_run_at == datetime(2031, 5, 1, 19, 0, tzinfo=UTC)  # 03:00 on 2 May in Shanghai
    once = make(db, cron="@once", start_at=start.isoformat())
    assert once.next_run_at == start
    with db.transaction() as conn:
        assert conn.execute(select(SCHEDULES.c.name)).scalars().all() == [row.name, once.name]


def test_a_stored_template_this_version_refuses_is_recorded_without_its_secrets(db: Database) -> None:
    """A template saved by an older version that this one no longer accepts: `last_error` (shown by the
    API, and logged) names the field, never the unsealed value pydantic would quote."""
    row = make(db, task={"params": {"password": "hunter2-secret"}})
    template = {**row.template, "env": {"API_TOKEN": ["hunter2-secret"]}, "exec_timeout": "hunter2-secret"}
    with db.transaction() as conn:
        conn.execute(update(SCHEDULES).where(SCHEDULES.c.id == row.id).values(template=template))
        assert fire(conn, row.id, row.next_run_at, row.next_run_at, FIRING) is None
    after = reread(db, row.id)
    assert "task.env.API_TOKEN" in after.last_error and "task.exec_timeout" in after.last_error
    assert "hunter2" not in after.last_error
