"""Leases and expiry follow the database's clock, not the replica's (DESIGN §3): a replica whose own
clock is an hour off still gives a claimed task its full lease and does not reap it at once.

The machine's clock cannot be changed here, so the replica's clock is a fake: the real one plus a skew.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from cloud.access import Principal
from cloud.db.engine import Database, migrate
from cloud.db.types import CLOCK, utcnow
from cloud.hub import Hub
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache, register_agent
from cloud.services.runs import claim_tasks, reap_expired
from cloud.services.tasks import create_task, get_task
from tests.e2e.pgdb import PgDatabases
from wire.agents import AgentRegister
from wire.credentials import TokenKind
from wire.tasks import TaskCreate

SKEW = 3600.0
LEASE = 30.0

AGENT_A1 = Principal(kind=TokenKind.agent, name="a1", agent_id="a1")
"""Agent a1 with its own token: registering refreshes its row."""


@contextmanager
def skewed_clock() -> Iterator[None]:
    """This process's clock an hour fast, as on a replica whose NTP is broken."""
    saved = CLOCK.system, CLOCK.offset
    CLOCK.system, CLOCK.offset = (lambda: time.time() + SKEW), 0.0
    try:
        yield
    finally:
        CLOCK.system, CLOCK.offset = saved


@pytest.fixture
def pg() -> Iterator[Database]:
    dbs = PgDatabases()
    db = Database(dbs.create(), Hub())
    try:
        migrate(db.engine)
        yield db
    finally:
        db.dispose()
        dbs.drop_all()


def db_now(db: Database) -> datetime:
    with db.engine.connect() as conn:
        return datetime.fromtimestamp(float(conn.exec_driver_sql("SELECT extract(epoch FROM now())").scalar_one()), UTC)


def claim_one(db: Database) -> str:
    sealer = Sealer([Fernet.generate_key()])
    with db.transaction() as conn:
        register_agent(conn, AgentRegister(agent_id="a1", executors=["shell"]), AGENT_A1)
        req = TaskCreate(agent_id="a1", type="shell", command="true")
        create_task(conn, req, agents=AgentCache(), offline_after=60, sealer=sealer)
    with db.transaction() as conn:
        [task] = claim_tasks(conn, "a1", 1, lease_seconds=LEASE, max_log_bytes=1024, sealer=sealer)
    return task.id


def test_a_replica_with_a_skewed_clock_follows_the_databases_clock(pg: Database) -> None:
    running = claim_one(pg)  # on a replica whose clock is right
    with skewed_clock():  # another replica, an hour fast
        assert utcnow() - db_now(pg) > timedelta(seconds=SKEW - 60)  # the fake really is off
        offset = pg.sync_clock(tries=5)
        assert offset is not None and abs(offset + SKEW) < 1
        assert abs(utcnow() - db_now(pg)) < timedelta(seconds=0.5)
        with pg.transaction() as conn:
            # On its own clock every lease would have run out an hour ago.
            assert reap_expired(conn) == 0
            assert get_task(conn, running).status == "running"
        claimed_here = claim_one(pg)
        with pg.transaction() as conn:
            lease_until = get_task(conn, claimed_here).lease_expires_at
    assert abs(lease_until - (db_now(pg) + timedelta(seconds=LEASE))) < timedelta(seconds=2)


def test_on_sqlite_the_clock_is_this_machines(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}", Hub())
    try:
        assert db.sync_clock() is None
        assert CLOCK.offset == 0.0
        assert abs(utcnow() - datetime.now(UTC)) < timedelta(seconds=0.5)
    finally:
        db.dispose()
