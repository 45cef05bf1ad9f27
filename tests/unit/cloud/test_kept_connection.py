"""SQLite: the event loop's thread keeps one connection between its units of work (cloud.db.engine.Database);
a failed unit of work, a nested one and another thread's are not disturbed by it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from cloud.db.engine import Database
from cloud.hub import Hub


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'kept.db'}", Hub())
    with database.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a INTEGER PRIMARY KEY, b INTEGER NOT NULL)")
    return database


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
    db.dispose()
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
    db.dispose()


def test_without_a_running_loop_the_pool_is_used(db: Database) -> None:
    with db.transaction() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (9, 9)")
    with db.reading() as conn:
        assert conn.exec_driver_sql("SELECT b FROM t WHERE a = 9").scalar_one() == 9
    assert db._kept is None  # nothing kept outside an event loop
    db.dispose()


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
    db.dispose()
