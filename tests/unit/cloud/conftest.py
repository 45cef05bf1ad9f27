"""Fixtures for the cloud's service tests: a migrated database per backend with one agent `a1`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.access import Principal
from cloud.db.engine import Database, migrate
from cloud.hub import Hub
from cloud.services.agents import register_agent
from tests.e2e.pgdb import PgDatabases
from wire.agents import AgentRegister
from wire.credentials import TokenKind

AGENT_A1 = Principal(kind=TokenKind.agent, name="a1", agent_id="a1")
"""Agent a1 with its own token: registering refreshes its row."""


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """SQLite and the machine's PostgreSQL (a database of its own), migrated, with agent `a1` (shell)."""
    dbs = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        dbs = PgDatabases()
        url = dbs.create()
    database = Database(url, Hub())
    try:
        migrate(database.engine)
        with database.transaction() as conn:
            register_agent(conn, AgentRegister(agent_id="a1", executors=["shell"]), AGENT_A1)
        yield database
    finally:
        database.dispose()
        if dbs is not None:
            dbs.drop_all()
