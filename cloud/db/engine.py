"""Engine creation (SQLite in WAL mode by default) and migrations applied at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError

from cloud.db import events, jsoncodec, notify
from cloud.db.types import CLOCK
from cloud.hub import Hub
from files.private import FILE_MODE, private_file

log = logging.getLogger("tiangong.cloud")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATE_LOCK = 0x7469616E_0001  # "tian" + 1: PostgreSQL advisory lock keys are bigints
_BACKGROUND_LOCK = 0x7469616E_0002
MAX_CLOCK_ROUND_TRIP = 0.05
"""Seconds; a slower answer says too little about when the database read its clock, so it is not used."""


_JSON_CODEC: dict[str, Any] = {"json_serializer": jsoncodec.dumps, "json_deserializer": jsoncodec.loads}


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, NORMAL sync and a busy timeout on every connection."""
    if not url.startswith("sqlite"):
        engine = create_engine(url, hide_parameters=True, **_JSON_CODEC)
        _ping_after_idle(engine)
        return engine
    _private_sqlite_files(url)
    # hide_parameters: a database error logged whole must not carry task params (passwords) or tokens.
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True, **_JSON_CODEC
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the last commit.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


PING_AFTER_IDLE_SECONDS = 2.0
"""A pooled PostgreSQL connection unused for longer is tested before use (the server may have restarted)."""


def _ping_after_idle(engine: Engine) -> None:
    """Test a pooled connection before use only when it sat idle for PING_AFTER_IDLE_SECONDS.

    SQLAlchemy's pool_pre_ping tests every checkout: a round trip to the server before every unit of work,
    a fifth of a busy replica's time blocked on PostgreSQL (docs/performance.md). A connection used a moment
    ago needs no test; if the server went away since, the statement fails, the pool drops every connection
    made before (SQLAlchemy's disconnect handling) and the request is a 503 like any during an outage.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            _test(dbapi_conn)
        except Exception as exc:
            # The pool discards this connection and checks out another (it retries up to three times).
            raise DisconnectionError(f"pooled connection failed its test: {exc}") from exc


def _test(dbapi_conn: Any) -> None:
    """A round trip on the connection (raises when the server is gone), in a transaction of its own."""
    with dbapi_conn.cursor() as cur:
        cur.execute("SELECT 1")
    dbapi_conn.rollback()


def _private_sqlite_files(url: str) -> None:
    """The database file is created 0600 before SQLite opens it (SQLite gives its -wal and -shm the
    database's mode); files an older version left readable by others are tightened."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    db = Path(path)
    if not db.exists() and db.parent.is_dir():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    for name in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        private_file(name)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together: one migrates, the others wait and then find nothing to do.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _dbapi(conn: Connection) -> Any:
    return conn.connection.dbapi_connection


class Database:
    """The engine plus the one way the cloud opens a unit of work."""

    def __init__(self, url: str, hub: Hub) -> None:
        self.url = url
        self.hub = hub
        self.observers: list[Callable[[list[tuple[str, Any]]], None]] = []
        """Called after each commit with what the transaction observed (cloud.metrics counts it)."""
        self.engine = make_engine(url)
        self.notifies = self.engine.dialect.name == "postgresql"
        """PostgreSQL: wake-ups also go to other replicas through LISTEN/NOTIFY (cloud.db.notify)."""
        self.origin = notify.new_origin()
        self._kept: Connection | None = None
        """The connection of the first thread with a running event loop, kept open between its units of work
        (the pool's checkout and checkin of each cost more than a statement). Other threads, and a unit of
        work opened while this one is in use, take the pool's."""
        self._kept_thread: int | None = None
        self._kept_busy = False
        self._kept_idle_since = 0.0

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        kept = self._kept_connection()
        if kept is None:
            with self.engine.connect() as conn:
                yield conn
            return
        self._kept_busy = True
        try:
            yield kept
        finally:
            self._kept_busy = False
            self._reset_kept(kept)
            self._kept_idle_since = time.monotonic()

    def _reset_kept(self, kept: Connection) -> None:
        """What the pool does at checkin: end a transaction left open (a read begins one); a connection that
        cannot be reset, or was invalidated, is closed, never handed on."""
        try:
            if kept.in_transaction():
                kept.rollback()
        except Exception:
            log.warning("the kept database connection could not be reset; opening a new one", exc_info=True)
            self._drop_kept(kept)
            return
        if kept.invalidated:
            self._kept = None
            kept.close()

    def _drop_kept(self, kept: Connection) -> None:
        """Discard the kept connection (its DBAPI connection is closed, not returned to the pool)."""
        self._kept = None
        with contextlib.suppress(Exception):
            kept.invalidate()
            kept.close()

    def _kept_connection(self) -> Connection | None:
        if self._kept_busy:
            return None
        thread = threading.get_ident()
        if self._kept_thread is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # a worker thread, or no loop yet: the pool
                return None
            self._kept_thread = thread
        if thread != self._kept_thread:
            return None
        kept = self._kept
        if kept is not None and self.notifies and time.monotonic() - self._kept_idle_since >= PING_AFTER_IDLE_SECONDS:
            # As a pooled connection is tested after sitting idle: the server may have restarted since.
            try:
                _test(_dbapi(kept))
            except Exception as exc:
                log.info("the kept database connection failed its test (%s); opening a new one", exc)
                self._drop_kept(kept)
                kept = None
        if kept is None:
            kept = self._kept = self.engine.connect()
        return kept

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One short transaction: committed on success, rolled back on error. Never await inside.

        A Core connection, not an ORM Session: the session's bookkeeping cost more than the SQL
        (bench/roundtrip.py). Wake-ups queued by services are published only after the commit.
        """
        with self._connection() as conn, conn.begin():
            events.take(conn)
            events.take_observed(conn)
            events.take_after_commit(conn)
            yield conn
            queued = events.take(conn)
            observed = events.take_observed(conn)
            committed = events.take_after_commit(conn)
            if queued and self.notifies:
                # Other replicas hear of it at commit (NOTIFY is transactional), never before.
                notify.commit_with(conn, self.origin, queued)
        try:
            for callback in committed:
                callback()
        finally:
            self.hub.publish(queued)  # committed: its wake-ups go out whatever a callback did
        if observed:
            for observer in self.observers:
                observer(observed)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for a lone read that needs no transaction of its own: on PostgreSQL in autocommit,
        so the read is one round trip to the server instead of three (BEGIN, the read, COMMIT). Never
        write through it, never await inside."""
        with self._connection() as conn:
            if not self.notifies:
                yield conn
            elif conn is not self._kept:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")  # the pool resets it at checkin
            else:
                # Set on the driver's connection and reset here: the kept connection is never checked in,
                # and execution_options would leave AUTOCOMMIT on for the transactions that follow.
                raw = _dbapi(conn)
                try:
                    raw.autocommit = True
                    yield conn
                finally:
                    try:
                        raw.autocommit = False
                    except Exception:  # the server is gone (psycopg refuses on a closed connection)
                        conn.invalidate()  # so it is dropped, never reused in autocommit

    def lead(self, conn: Connection) -> bool:
        """Whether this transaction runs the background pass: on PostgreSQL only one replica at a time
        (a transaction-scoped advisory lock, released at commit); SQLite has one writer process anyway."""
        if not self.notifies:
            return True
        return bool(conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({_BACKGROUND_LOCK})").scalar())

    def sync_clock(self, tries: int = 1) -> float | None:
        """PostgreSQL: measure the database's clock against this process's and make utcnow() follow it,
        to within half a round trip; returns the offset, or None when nothing was measured (SQLite, or
        only slow answers: the last offset stays). On SQLite the database's clock is this machine's."""
        if self.is_sqlite:
            CLOCK.offset = 0.0
            return None
        for _ in range(tries):
            with self.engine.connect() as conn:
                sent = CLOCK.system()
                db_time = conn.exec_driver_sql("SELECT extract(epoch FROM clock_timestamp())").scalar_one()
                back = CLOCK.system()
            if back - sent <= MAX_CLOCK_ROUND_TRIP:
                CLOCK.offset = float(db_time) - (sent + back) / 2
                return CLOCK.offset
        return None

    def dispose(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None
        self.engine.dispose()
