"""PostgreSQL's pooled connections are tested before use only after sitting idle (cloud.db.engine): a
connection whose server side went away while it was idle is replaced without the caller seeing an error,
and one used a moment ago is used as it is, with no round trip of its own."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from cloud.db import engine as engine_module
from cloud.db.engine import Database
from cloud.hub import Hub
from tests.e2e.pgdb import ADMIN_DSN, PgDatabases


@pytest.fixture
def pg() -> Iterator[Database]:
    dbs = PgDatabases()
    database = Database(dbs.create(), Hub())
    try:
        yield database
    finally:
        database.dispose()
        dbs.drop_all()


def _kill_pooled_backend(db: Database) -> None:
    """Terminate the server side of the pool's one connection, as a server restart would."""
    with db.transaction() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with psycopg.connect(**ADMIN_DSN, autocommit=True) as admin:  # type: ignore[arg-type]
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_an_idle_connection_whose_server_side_died_is_replaced(pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)  # every checkout counts as idle
    _kill_pooled_backend(pg)
    with pg.transaction() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_a_connection_used_a_moment_ago_is_not_tested(pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of the same rule: no test round trip, so a death in between is the statement's error
    (a 503 to the caller), after which the pool drops its connections and the next unit of work works."""
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    _kill_pooled_backend(pg)
    with pytest.raises(OperationalError), pg.transaction() as conn:
        conn.execute(text("SELECT 1"))
    with pg.transaction() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
