"""A cancel or deadline stops the task's work on the server within 1 s, in every phase (issue 17).

Each test watches the server (`information_schema.PROCESSLIST`, `pg_stat_activity`) for the phase it
means to stop, cancels there, and measures both the task's end and the server's: no statement of the
task's account may still run 1 s after the stop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from executors.db.params import Target
from tests.integration.db.conftest import MARIADB, POSTGRES, MariaDb, PgDb
from tests.unit.executors.harness import Harness, make_task, run_task
from wire.tasks import TaskStatus

STOPS_WITHIN = 1.0
"""The guarantee: seconds from the cancel (or deadline) to the task's end and to an idle server."""


class Watch:
    """Cancels the task (or runs `then`) when `seen()` first holds on the server, and remembers when."""

    def __init__(self, seen: Callable[[], bool], cancel: bool = True, then: Callable[[], None] | None = None) -> None:
        self.seen, self.cancel, self.then = seen, cancel, then
        self.at: float | None = None
        self.ended = threading.Event()

    def setup(self, ctx: Harness) -> None:
        loop = asyncio.get_running_loop()

        def watch() -> None:
            while not self.ended.is_set():
                if self.seen():
                    self.at = time.monotonic()
                    if self.cancel:
                        loop.call_soon_threadsafe(ctx.cancel_event.set)
                    if self.then is not None:
                        self.then()
                    return
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()

    def run(self, task: Any, workdir: Path) -> Any:
        """The task's outcome; the watch ends with the task."""
        try:
            return run_task(task, workdir, setup=self.setup)[0]
        finally:
            self.ended.set()


def warm_up(task: Any, workdir: Path) -> None:
    """One task of the type first: the driver's first import is the agent's time, not the deadline's."""
    out, _ = run_task(task, workdir)
    assert out.status is TaskStatus.success, out.error


def server_idle_after(busy: Callable[[], bool], since: float) -> float:
    """Seconds from `since` until `busy()` no longer holds (polled; fails after 10 s)."""
    end = time.monotonic() + 10
    while busy():
        assert time.monotonic() < end, "the task's statement still runs on the server"
        time.sleep(0.02)
    return time.monotonic() - since


# MariaDB


def my_running(db: MariaDb, fragment: str = "") -> bool:
    """A statement of the task's account (not the test's root connections) runs on the server."""
    rows = db.query("SELECT INFO FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND = 'Query'", db.user)
    return any(fragment in (info or "") for (info,) in rows)


def my_task(script: str, db: MariaDb, **options: Any) -> Any:
    return make_task(script, type="mysql", target=db.target(), exec_options=options)


@contextmanager
def my_row_locked(db: MariaDb, *sql: str) -> Iterator[Any]:
    """Another transaction holds the locks of the statements `sql`, until the block ends."""
    import pymysql

    conn = pymysql.connect(**MARIADB, database=db.name, autocommit=False)
    try:
        with conn.cursor() as cur:
            for one in sql:
                cur.execute(one)
        yield conn
    finally:
        conn.rollback()
        conn.close()


@pytest.fixture
def accounts(mariadb: MariaDb) -> MariaDb:
    mariadb.query("CREATE TABLE acct (id INT PRIMARY KEY, balance INT NOT NULL)")
    mariadb.query("INSERT INTO acct VALUES (1, 100), (2, 200)")
    return mariadb


def test_mysql_cancel_during_the_backup_reads_lock_wait(accounts: MariaDb, tmp_path: Path) -> None:
    """The UPDATE's backup read waits on a lock; canceled there, the UPDATE must not run after all."""
    watch = Watch(lambda: my_running(accounts, "FOR UPDATE"))
    with my_row_locked(accounts, "UPDATE acct SET balance = 0 WHERE id = 1"):
        out = watch.run(my_task("UPDATE acct SET balance = balance + 1 WHERE id = 1", accounts), tmp_path)
        assert watch.at is not None
        ended = time.monotonic() - watch.at
        idle = server_idle_after(lambda: my_running(accounts), watch.at)
    assert out.status is TaskStatus.canceled, out.error
    assert out.error.startswith("statement 1 interrupted (canceled)")
    assert ended < STOPS_WITHIN and idle < STOPS_WITHIN, (ended, idle)
    assert [e["stage"] for e in out.data] == ["INTERRUPTED"]
    assert accounts.query("SELECT balance FROM acct ORDER BY id") == [(100,), (200,)]


def test_mysql_timeout_during_the_backup_reads_lock_wait(accounts: MariaDb, tmp_path: Path) -> None:
    warm_up(my_task("SELECT 1", accounts), tmp_path)
    with my_row_locked(accounts, "UPDATE acct SET balance = 0 WHERE id = 2"):
        started = time.monotonic()
        out, _ = run_task(my_task("DELETE FROM acct WHERE id = 2", accounts, timeout_ms=3000), tmp_path)
        ended = time.monotonic() - started
        idle = server_idle_after(lambda: my_running(accounts), started)
    assert out.status is TaskStatus.timeout, out.error
    assert ended < 3 + STOPS_WITHIN and idle < 3 + STOPS_WITHIN, (ended, idle)
    assert accounts.query("SELECT balance FROM acct ORDER BY id") == [(100,), (200,)]


@pytest.mark.parametrize(("phase", "fragment"), [("backup read", "FOR UPDATE"), ("statement", "UPDATE acct SET")])
def test_mysql_cancel_of_a_slow_update_in_each_phase(
    phase: str, fragment: str, accounts: MariaDb, tmp_path: Path
) -> None:
    """A slow scan (SLEEP in the WHERE): canceled in the backup read or in the UPDATE itself, the open
    batch (an INSERT before it) is rolled back and nothing of it runs on."""

    watch = Watch(lambda: my_running(accounts, fragment))  # the backup read is a SELECT, not "UPDATE acct SET"
    script = "INSERT INTO acct VALUES (3, 300); UPDATE acct SET balance = 7 WHERE id = 1 AND SLEEP(3) = 0"
    out = watch.run(my_task(script, accounts), tmp_path)
    assert watch.at is not None
    ended = time.monotonic() - watch.at
    idle = server_idle_after(lambda: my_running(accounts), watch.at)
    assert out.status is TaskStatus.canceled, out.error
    assert ended < STOPS_WITHIN and idle < STOPS_WITHIN, (phase, ended, idle)
    assert [e["stage"] for e in out.data] == ["ROLLED_BACK", "INTERRUPTED"]
    assert accounts.query("SELECT id, balance FROM acct ORDER BY id") == [(1, 100), (2, 200)]


def test_mysql_deadlock_in_the_backup_read_fails_the_statement(accounts: MariaDb, tmp_path: Path) -> None:
    """A deadlock rolls the whole transaction back on MySQL: running the UPDATE "without a backup" then
    would start a new transaction, and the batch's first statement, already undone, would be reported
    committed. The statement fails instead, and the batch is reported rolled back."""
    accounts.query("CREATE TABLE filler (id INT PRIMARY KEY)")
    heavy = "INSERT INTO filler SELECT seq FROM seq_1_to_500"  # InnoDB picks the lighter transaction as victim
    with my_row_locked(accounts, heavy, "UPDATE acct SET balance = 0 WHERE id = 1") as other:
        errors: list[BaseException] = []

        def close_the_cycle() -> None:
            try:
                with other.cursor() as cur:
                    cur.execute("UPDATE acct SET balance = 0 WHERE id = 2")
            except Exception as exc:  # reported below, not lost in the watch's thread
                errors.append(exc)

        # The cycle closes only once the task waits in the second statement's backup read (of row 1): the
        # first one's read (of row 2) can be caught running too, and closing then took row 2 before the task.
        waiting = Watch(lambda: my_running(accounts, "= 1 FOR UPDATE"), cancel=False, then=close_the_cycle)
        script = "UPDATE acct SET balance = 1 WHERE id = 2; UPDATE acct SET balance = 2 WHERE id = 1"
        out = waiting.run(my_task(script, accounts, trans_batch_size=10), tmp_path)
    assert not errors, errors  # the task is the deadlock's victim, never the other transaction
    assert out.status is TaskStatus.failed
    assert "(1213) Deadlock found" in out.error, out.error
    assert [e["stage"] for e in out.data] == ["ROLLED_BACK", "FAILED"]
    assert accounts.query("SELECT balance FROM acct ORDER BY id") == [(100,), (200,)]


def test_mysql_max_rows_stops_the_query(mariadb: MariaDb, tmp_path: Path) -> None:
    """20 million rows asked for, 5 kept: the server stops producing the rest."""
    warm_up(my_task("SELECT 1", mariadb), tmp_path)
    started = time.monotonic()
    out, _ = run_task(my_task("SELECT seq FROM seq_1_to_20000000", mariadb, max_rows=5), tmp_path)
    took = time.monotonic() - started
    assert out.status is TaskStatus.success, out.error
    (entry,) = out.data
    assert entry["rows"] == [[1], [2], [3], [4], [5]] and entry["truncated"] is True
    assert took < 15, took  # reading all 20 million rows takes over 30 s here; a stopped query well under 1 s
    assert not my_running(mariadb)


def test_mysql_update_to_values_already_there_is_not_a_mismatch(accounts: MariaDb, tmp_path: Path) -> None:
    """MySQL counts changed rows by default: rows that already held the values are still the rows the
    UPDATE matched, as the backup read found them."""
    out, _ = run_task(my_task("UPDATE acct SET balance = balance WHERE id IN (1, 2)", accounts), tmp_path)
    assert out.status is TaskStatus.success, out.error
    (entry,) = out.data
    assert entry["affected_rows"] == 2
    assert entry["rollback_note"] == "" and len(entry["rollback_sql"]) == 2


def close_while_busy(session: Any, sql: str, dialect: str, running: Callable[[], bool]) -> float:
    """Closes `session` while a worker thread is inside `sql` (as after an interrupt never answered):
    the seconds close() took; the worker must have been woken with an error."""
    from executors.db.split import split_sql

    (stmt,) = split_sql(sql, dialect)
    failed: list[BaseException] = []

    def work() -> None:
        try:
            session.execute(stmt, 10, backup=True)
        except Exception as exc:
            failed.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    end = time.monotonic() + 10
    while not running():
        assert time.monotonic() < end, "the statement never started"
        time.sleep(0.02)
    started = time.monotonic()
    session.close(reusable=False)
    closed = time.monotonic() - started
    worker.join(STOPS_WITHIN)
    assert not worker.is_alive() and failed, "the worker is still waiting for the server"
    return closed


def test_mysql_dropping_a_busy_connection_does_not_wait_for_the_server(mariadb: MariaDb) -> None:
    """A connection still inside a statement (its worker never answered the interrupt) is dropped at
    once: killed on the server, its socket shut, its worker woken."""
    from executors.db.mysql_conn import open_session

    target = Target("mysql", "127.0.0.1", 3306, mariadb.user, mariadb.target()["password"], mariadb.name, "t")
    started = time.monotonic()
    closed = close_while_busy(
        open_session(target, transactional=True), "SELECT SLEEP(30)", "mysql", lambda: my_running(mariadb, "SLEEP")
    )
    assert closed < STOPS_WITHIN, closed
    assert server_idle_after(lambda: my_running(mariadb), started + closed) < STOPS_WITHIN


# PostgreSQL


def pg_busy(db: PgDb, fragment: str = "") -> bool:
    """A connection of the task (application_name tiangong) runs a statement or holds a transaction open."""
    rows = db.query(
        "SELECT query FROM pg_stat_activity WHERE application_name = 'tiangong' AND datname = current_database()"
        " AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')"
    )
    return any(fragment in q for (q,) in rows)


def pg_waiting(db: PgDb, fragment: str) -> bool:
    rows = db.query(
        "SELECT query FROM pg_stat_activity WHERE application_name = 'tiangong' AND datname = current_database()"
        " AND state = 'active'"
    )
    return any(fragment in q for (q,) in rows)


@pytest.fixture
def pg_accounts(pg: PgDb) -> PgDb:
    pg.query("CREATE TABLE acct (id INT PRIMARY KEY, balance INT NOT NULL)")
    pg.query("INSERT INTO acct VALUES (1, 100), (2, 200)")
    return pg


@contextmanager
def pg_row_locked(db: PgDb, sql: str) -> Iterator[None]:
    import psycopg

    conn = psycopg.connect(**{**POSTGRES, "dbname": db.name})
    try:
        conn.execute(sql)
        yield
    finally:
        conn.rollback()
        conn.close()


def pg_task(script: str, db: PgDb, **options: Any) -> Any:
    return make_task(script, type="postgres", target=db.target(), exec_options=options)


def test_postgres_cancel_during_the_backup_reads_lock_wait(pg_accounts: PgDb, tmp_path: Path) -> None:
    watch = Watch(lambda: pg_waiting(pg_accounts, "tiangong_"))  # the backup read: a server-side cursor
    with pg_row_locked(pg_accounts, "UPDATE acct SET balance = 0 WHERE id = 1"):
        out = watch.run(pg_task("UPDATE acct SET balance = balance + 1 WHERE id = 1", pg_accounts), tmp_path)
        assert watch.at is not None
        ended = time.monotonic() - watch.at
        idle = server_idle_after(lambda: pg_busy(pg_accounts), watch.at)
    assert out.status is TaskStatus.canceled, out.error
    assert ended < STOPS_WITHIN and idle < STOPS_WITHIN, (ended, idle)
    assert [e["stage"] for e in out.data] == ["INTERRUPTED"]
    assert pg_accounts.query("SELECT balance FROM acct ORDER BY id") == [(100,), (200,)]


@pytest.mark.parametrize(("phase", "fragment"), [("backup read", "tiangong_"), ("statement", "UPDATE acct SET")])
def test_postgres_timeout_of_a_slow_update_in_each_phase(
    phase: str, fragment: str, pg_accounts: PgDb, tmp_path: Path
) -> None:
    """The deadline falls in the backup read (3 s of pg_sleep; it runs as a server-side cursor
    `tiangong_<n>`) or in the UPDATE (after 3 s more)."""
    timeout_ms = 1500 if phase == "backup read" else 4500
    script = "INSERT INTO acct VALUES (3, 300); UPDATE acct SET balance = 7 WHERE id = 1 AND pg_sleep(3) IS NOT NULL"
    watch = Watch(lambda: pg_waiting(pg_accounts, fragment), cancel=False)
    warm_up(pg_task("SELECT 1", pg_accounts), tmp_path)
    started = time.monotonic()
    out = watch.run(pg_task(script, pg_accounts, timeout_ms=timeout_ms), tmp_path)
    ended = time.monotonic() - started
    idle = server_idle_after(lambda: pg_busy(pg_accounts), started)
    limit = timeout_ms / 1000 + STOPS_WITHIN
    assert out.status is TaskStatus.timeout, out.error
    assert watch.at is not None and watch.at - started < timeout_ms / 1000, f"never reached the {phase}"
    assert ended < limit and idle < limit, (phase, ended, idle)
    assert [e["stage"] for e in out.data] == ["ROLLED_BACK", "INTERRUPTED"]
    assert pg_accounts.query("SELECT id, balance FROM acct ORDER BY id") == [(1, 100), (2, 200)]


def test_postgres_dropping_a_busy_connection_ends_its_backend(pg: PgDb) -> None:
    """A backend goes on with its statement after its client vanished: it is terminated on the server."""
    from executors.db.postgres_conn import open_session

    target = Target("postgres", "127.0.0.1", 5432, "postgres", None, pg.name, "t")
    started = time.monotonic()
    closed = close_while_busy(
        # a query runs as a server-side cursor, FETCH ... FROM "tiangong_<n>"
        open_session(target),
        "SELECT pg_sleep(30)",
        "postgres",
        lambda: pg_waiting(pg, "tiangong_"),
    )
    assert closed < STOPS_WITHIN, closed
    assert server_idle_after(lambda: pg_busy(pg), started + closed) < STOPS_WITHIN


def test_no_statement_starts_once_the_session_was_interrupted(accounts: MariaDb, pg_accounts: PgDb) -> None:
    """A cancel that lands between two steps (after the backup read, before the UPDATE; between two
    statements) finds nothing running to kill: what comes next must then not start at all."""
    from executors.db import mysql_conn, postgres_conn
    from executors.db.blocking import Interrupted
    from executors.db.split import split_sql

    password = accounts.target()["password"]
    sessions: list[mysql_conn.MySqlSession | postgres_conn.PostgresSession] = [
        mysql_conn.open_session(Target("mysql", "127.0.0.1", 3306, accounts.user, password, accounts.name, "t"), True),
        postgres_conn.open_session(Target("postgres", "127.0.0.1", 5432, "postgres", None, pg_accounts.name, "t")),
    ]
    for session in sessions:
        (stmt,) = split_sql("UPDATE acct SET balance = 0 WHERE id = 1", session.dialect)
        session.interrupt()
        with pytest.raises(Interrupted):
            session.execute(stmt, 10, backup=True)
        session.close(reusable=False)
    assert accounts.query("SELECT balance FROM acct WHERE id = 1") == [(100,)]
    assert pg_accounts.query("SELECT balance FROM acct WHERE id = 1") == [(100,)]
