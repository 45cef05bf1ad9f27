"""The event loop's thread keeps one connection between its units of work (cloud.db.engine.Database), on
SQLite and PostgreSQL; a failed unit of work, a nested one and another thread's are not disturbed by it, and a
kept PostgreSQL connection that lost its server is replaced."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, column, func, select, table
from sqlalchemy.exc import DBAPIError, IntegrityError

from cloud.db import engine
from cloud.db.engine import Database
from cloud.db.prepared import Prepared
from cloud.hub import Hub
from tests.e2e.pgdb import PgDatabases


@contextlib.contextmanager
def _made(url: str) -> Iterator[Database]:
    database = Database(url, Hub())
    try:
        with database.transaction() as conn:
            conn.exec_driver_sql("CREATE TABLE t (a INTEGER PRIMARY KEY, b INTEGER NOT NULL)")
        yield database
    finally:
        database.dispose()


@contextlib.contextmanager
def _made_on_postgres() -> Iterator[Database]:
    dbs = PgDatabases()
    try:
        with _made(dbs.create()) as database:
            yield database
    finally:
        dbs.drop_all()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    made = _made(f"sqlite:///{tmp_path / 'kept.db'}") if request.param == "sqlite" else _made_on_postgres()
    with made as database:
        yield database


@pytest.fixture
def pg() -> Iterator[Database]:
    """PostgreSQL only: a server session can be ended under the connection."""
    with _made_on_postgres() as database:
        yield database


def _raw(conn: Connection) -> object:
    return conn.connection.dbapi_connection


def test_the_loops_units_of_work_share_one_connection_and_a_failed_one_is_rolled_back(db: Database) -> None:
    async def main() -> tuple[bool, list[tuple[int, int]]]:
        with db.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1, 1)")
            first = _raw(conn)
        with pytest.raises(IntegrityError), db.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2, 2)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1, 3)")  # the same key: the whole unit fails
        with db.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (3, 3)")
            same = _raw(conn) is first
        with db.reading() as conn:
            rows = [(int(a), int(b)) for a, b in conn.exec_driver_sql("SELECT a, b FROM t ORDER BY a")]
        return same, rows

    same, rows = asyncio.run(main())
    assert same
    assert rows == [(1, 1), (3, 3)]  # row 2 went with its failed unit of work


def test_a_nested_unit_of_work_and_another_thread_get_their_own_connection(db: Database) -> None:
    async def main() -> tuple[bool, bool]:
        with db.transaction() as outer:
            with db.reading() as inner:
                nested_own = _raw(inner) is not _raw(outer)
            seen: list[object] = []

            def worker() -> None:
                with db.reading() as conn:
                    seen.append(_raw(conn))

            thread = threading.Thread(target=worker)
            thread.start()
            thread.join()
            return nested_own, seen[0] is not _raw(outer)

    assert asyncio.run(main()) == (True, True)


def test_without_a_running_loop_the_pool_is_used(db: Database) -> None:
    with db.transaction() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (9, 9)")
    with db.reading() as conn:
        assert conn.exec_driver_sql("SELECT b FROM t WHERE a = 9").scalar_one() == 9
    assert db._kept is None  # nothing kept outside an event loop


def test_a_read_leaves_the_kept_connection_ready_for_a_write(db: Database) -> None:
    """A read begins a transaction on SQLite; it is ended when the read is, so the next unit of work on the
    same connection can begin its own."""

    async def main() -> int:
        with db.reading() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one()
            read_on = _raw(conn)
        with db.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (5, 5)")
            assert _raw(conn) is read_on
        with db.reading() as conn:
            return int(conn.exec_driver_sql("SELECT b FROM t WHERE a = 5").scalar_one())

    assert asyncio.run(main()) == 5


def test_a_read_in_autocommit_leaves_the_next_transaction_transactional(db: Database) -> None:
    """PostgreSQL reads run in autocommit; on the kept connection that is undone after the read, so a unit of
    work that fails afterwards still rolls back all of its statements."""

    async def main() -> list[int]:
        with db.reading() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one()
        with pytest.raises(IntegrityError), db.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (7, 7)")
            conn.exec_driver_sql("INSERT INTO t VALUES (7, 8)")
        with db.reading() as conn:
            return [int(a) for (a,) in conn.exec_driver_sql("SELECT a FROM t")]

    assert asyncio.run(main()) == []


COUNT = Prepared(select(func.count().label("n")).select_from(table("t", column("a"))))


def _server_pid(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_a_kept_connection_whose_server_session_ended_is_replaced_after_one_failure(pg: Database) -> None:
    """The session is ended under a busy loop (no idle test runs): the unit of work that meets the dead
    connection fails as a database error, the next one gets a new connection and works. The failing read runs
    on the driver's cursor (cloud.db.prepared), which SQLAlchemy's own disconnect handling never sees."""

    async def main() -> tuple[bool, int]:
        with pg.reading() as conn:
            pid = _server_pid(conn)
        with pg.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(DBAPIError), pg.reading() as conn:
            COUNT.first(conn, {})
        with pg.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2, 2)")
            new = _server_pid(conn) != pid
        with pg.reading() as conn:
            return new, int(conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one())

    assert asyncio.run(main()) == (True, 1)


def test_a_kept_connection_idle_past_the_ping_delay_is_tested_and_replaced(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After PING_AFTER_IDLE_SECONDS unused the kept connection is tested first, as a pooled one is: a session
    the server ended meanwhile costs no failed unit of work."""
    monkeypatch.setattr(engine, "PING_AFTER_IDLE_SECONDS", 0.0)

    async def main() -> tuple[bool, int]:
        with pg.reading() as conn:
            pid = _server_pid(conn)
        with pg.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        with pg.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (3, 3)")
            return _server_pid(conn) != pid, int(conn.exec_driver_sql("SELECT b FROM t").scalar_one())

    assert asyncio.run(main()) == (True, 3)
