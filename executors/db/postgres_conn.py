"""Connections of the `postgres` type: pooled sessions, catalog reads for rollback SQL, interrupts."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from typing import Any

from sqlglot import exp

from executors.db import pools
from executors.db.blocking import StatementGuard
from executors.db.params import Target
from executors.db.rollback import BackupDb, Column, Executed, run_with_backup
from executors.db.split import Statement
from executors.db.sql import SqlSession, StatementOutput

CONNECT_TIMEOUT_SECONDS = 10
KILL_CONNECT_TIMEOUT_SECONDS = 5
"""The connection that ends a stuck backend: short, since a stop waits for it."""
_MUST_STOP = {
    "57014",  # query_canceled: our cancel request, or statement_timeout
    "55P03",  # lock_not_available: lock_timeout; the statement itself would wait as long again
    "40P01",  # deadlock_detected
}
"""SQLSTATEs of a backup read that end the statement instead of letting it run without a backup."""
log = logging.getLogger("tiangong.executors.db")
_OUTSIDE_TRANSACTION = re.compile(
    r"\s*(VACUUM|ALTER\s+SYSTEM|(CREATE|DROP)\s+(DATABASE|TABLESPACE)|"
    r"(CREATE\s+(UNIQUE\s+)?|DROP\s+|REINDEX\s+.*)INDEX\s+CONCURRENTLY|REINDEX\s+.*\bCONCURRENTLY)",
    re.IGNORECASE | re.DOTALL,
)
_DECLARABLE = re.compile(r"\s*(SELECT|VALUES|TABLE|WITH)\b", re.IGNORECASE)
"""Statements a server-side cursor can run (DECLARE ... CURSOR FOR <query>)."""


def _connect_args(target: Target) -> dict[str, Any]:
    args: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "dbname": target.database,
        "sslmode": target.sslmode,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": "tiangong",
        # A server or network that vanishes mid-statement is noticed instead of waited on forever.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if target.password:
        args["password"] = target.password
    return args


def _reset(conn: Any) -> None:
    """Before a connection goes back to the pool: nothing of this task's session (an open transaction,
    search_path, roles, settings, temporary tables, prepared statements) may reach the next task."""
    from psycopg.pq import TransactionStatus

    status = conn.info.transaction_status
    if status == TransactionStatus.ACTIVE:
        raise RuntimeError("the connection is still running a statement")
    if status != TransactionStatus.IDLE:
        conn.rollback()
    conn.autocommit = True
    try:
        conn.execute("DISCARD ALL")
    finally:
        conn.autocommit = False


def _alive(conn: Any) -> bool:
    """An empty query outside any transaction: a connection the server or network dropped is replaced."""
    if conn.closed:
        return False
    conn.autocommit = True
    try:
        conn.execute("")
    finally:
        conn.autocommit = False
    return True


def _new_pool(target: Target) -> pools.ConnectionPool[Any]:
    """Seed 004's pool of psycopg connections: each made in the caller's thread, so a refused one fails
    the task with the server's own reason."""
    import psycopg

    args = _connect_args(target)
    return pools.ConnectionPool(lambda: psycopg.connect(**args), lambda conn: conn.close(), alive=_alive, reset=_reset)


_POOLS: pools.PoolCache[pools.ConnectionPool[Any]] = pools.PoolCache(lambda p: p.close())


class PostgresSession(SqlSession, BackupDb):
    """One pooled connection outside autocommit: the loop decides where transactions end."""

    dialect = "postgres"
    transactional = True

    def __init__(self, pool: pools.ConnectionPool[Any], lease: contextlib.ExitStack, args: dict[str, Any]) -> None:
        self._args = args
        self._pool = pool
        self._lease = lease
        self._item = pool.get()
        self.conn: Any = self._item.conn
        self._cursors = 0
        self._guard = StatementGuard()

    # SqlSession
    def execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        with self._guard.busy():
            return self._execute(stmt, max_rows, backup)

    def _execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        if _OUTSIDE_TRANSACTION.match(stmt.sql):
            return self._autocommit(stmt, max_rows)
        if backup:
            b = run_with_backup(self, stmt, max_rows)
            e = b.executed
            return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated, b.rollback_sql, b.note)
        e = self.run(stmt.sql, max_rows, rows=stmt.kind == "query")
        return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated)

    def _autocommit(self, stmt: Statement, max_rows: int) -> StatementOutput:
        """VACUUM, CREATE INDEX CONCURRENTLY, CREATE DATABASE...: refused inside a transaction block. The
        loop has committed the batch before them (they are batch boundaries)."""
        self.conn.commit()
        self.conn.autocommit = True
        try:
            e = self.run(stmt.sql, max_rows)
        finally:
            self.conn.autocommit = False
        return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated, [], f"not reversible: {stmt.verb}")

    def commit(self) -> None:
        with self._guard.busy(starts_work=False):
            self.conn.commit()

    def rollback(self) -> None:
        with self._guard.busy(starts_work=False):
            self.conn.rollback()

    def interrupt(self) -> None:
        # A cancel request (to the backend with this connection's key): the server stops the statement,
        # which then fails with QueryCanceled in the worker thread. No statement starts after this, and
        # the request is repeated while the worker is busy, in case one came before its statement.
        self._guard.stop(lambda: self.conn.cancel_safe(timeout=KILL_CONNECT_TIMEOUT_SECONDS))

    def close(self, reusable: bool) -> None:
        try:
            if self._guard.is_busy():
                self._drop()
                reusable = False
            if not reusable:
                # No rollback here: the connection may still be busy with an interrupted statement, and a
                # command would wait behind it. Closing it makes the server roll back.
                self.conn.close()
            self._pool.put(self._item, reusable)
        finally:
            self._lease.close()

    def _drop(self) -> None:
        """A connection whose worker is still inside a statement: a backend ignores a closed client until
        it next writes to it, so it is ended on the server (pg_terminate_backend, which rolls its
        transaction back), then the socket is shut, which wakes the worker with a connection error."""
        import psycopg

        try:
            with psycopg.connect(
                **{**self._args, "connect_timeout": KILL_CONNECT_TIMEOUT_SECONDS}, autocommit=True
            ) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", (self.conn.info.backend_pid,))
        except Exception as exc:  # the server may be unreachable: the socket is shut all the same
            log.warning("ending a stuck backend failed: %s", exc)
        with contextlib.suppress(OSError, psycopg.Error), socket.socket(fileno=os.dup(self.conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        if not self._guard.wait_idle(KILL_CONNECT_TIMEOUT_SECONDS):
            log.warning("a stuck PostgreSQL connection's worker did not return after its backend was ended")

    # BackupDb
    def run(self, sql: str, max_rows: int, rows: bool = False) -> Executed:
        self._guard.check()
        if rows and _DECLARABLE.match(sql) and " INTO " not in sql.upper():
            return self._stream(sql, max_rows)
        with self.conn.cursor() as cur:
            # prepare=True: the extended protocol runs exactly one statement, so text the splitter got
            # wrong fails loudly instead of running two statements as one.
            cur.execute(sql, prepare=True)
            if cur.description is None:
                return Executed(max(cur.rowcount, 0))
            got = cur.fetchmany(max_rows + 1)
            affected = max(cur.rowcount, 0) if not (cur.statusmessage or "").startswith("SELECT") else 0
            return Executed(
                affected, [d.name for d in cur.description], [list(r) for r in got[:max_rows]], len(got) > max_rows
            )

    def _stream(self, sql: str, max_rows: int) -> Executed:
        """A query through a server-side cursor: only max_rows + 1 rows ever reach the agent."""
        self._cursors += 1
        with self.conn.cursor(name=f"tiangong_{self._cursors}") as cur:
            cur.execute(sql)
            got = cur.fetchmany(max_rows + 1)
            cols = [d.name for d in cur.description or []]
        return Executed(0, cols, [list(r) for r in got[:max_rows]], len(got) > max_rows)

    def try_run(self, sql: str, max_rows: int) -> Executed | Exception:
        # A failed statement aborts a PostgreSQL transaction: a savepoint keeps the batch usable.
        import psycopg

        self._guard.check()
        self.conn.execute("SAVEPOINT tiangong_backup")
        try:
            out = self.run(sql, max_rows, rows=True)
        except psycopg.Error as exc:
            # A cancel, a timeout or a lost connection ends the statement: it must not run without a backup.
            if self._guard.stopped or exc.sqlstate in _MUST_STOP or isinstance(exc, psycopg.OperationalError):
                raise
            self.conn.execute("ROLLBACK TO SAVEPOINT tiangong_backup")
            return exc
        self.conn.execute("RELEASE SAVEPOINT tiangong_backup")
        return out

    def _regclass(self, table: exp.Table) -> str:
        bare = table.copy()
        bare.set("alias", None)
        return bare.sql(dialect="postgres")  # keeps the script's quoting, so case folding matches

    def column_info(self, table: exp.Table) -> list[Column]:
        # Read for each statement, not cached: an ALTER TABLE earlier in the script changes the answer.
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT attname, format_type(atttypid, atttypmod), attgenerated <> '', attidentity = 'a'"
                " FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
                " ORDER BY attnum",
                (self._regclass(table),),
            )
            return [Column(n, t, generated=g, identity_always=a) for n, t, g, a in cur.fetchall()]

    def primary_key(self, table: exp.Table) -> list[str]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary"
                " ORDER BY array_position(i.indkey::int2[], a.attnum)",
                (self._regclass(table),),
            )
            return [r[0] for r in cur.fetchall()]

    def columns(self, table: exp.Table) -> list[str]:
        return [c.name for c in self.column_info(table)]

    def exists(self, table: exp.Table) -> bool:
        with self.conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self._regclass(table),))
            row = cur.fetchone()
            return bool(row and row[0])

    def literal(self, value: Any) -> str:
        from psycopg import sql

        return str(sql.Literal(value).as_string(self.conn))

    def image_columns(self, columns: list[Column]) -> list[exp.Expression]:
        # Every value as its text form, written back with a cast to the column's own type: arrays, json
        # scalars, ranges, 'infinity' dates and floats (shortest exact text since PostgreSQL 12) survive
        # the round trip exactly.
        out: list[exp.Expression] = []
        for c in columns:
            text = exp.cast(exp.column(c.name, quoted=True), "text")
            out.append(exp.Alias(this=text, alias=exp.to_identifier(c.name, quoted=True)))
        return out

    def restore_literal(self, column: Column, value: Any) -> str:
        if value is None:
            return "NULL"
        return f"{self.literal(str(value))}::{column.type}"

    def inexact_read(self, columns: list[Column]) -> str | None:
        # The text read depends on these settings; with the defaults it parses back exactly in any session.
        # Checked whatever the column types: arrays, ranges, domains and composites hide their elements.
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('DateStyle'), current_setting('IntervalStyle'),"
                " current_setting('extra_float_digits')::int"
            )
            date_style, interval_style, float_digits = cur.fetchone()
        if not str(date_style).upper().startswith("ISO"):
            return f"DateStyle is {date_style!r}: dates would be read in a form another session may misread"
        if interval_style == "sql_standard":  # the one output style other sessions may read differently
            return "IntervalStyle is 'sql_standard': intervals would be read in a form another session may misread"
        if float_digits < 1:
            return f"extra_float_digits is {float_digits}: floats would be read rounded"
        return None

    def returning(self, stmt_sql: str, pk: list[str]) -> str | None:
        return f"{stmt_sql} RETURNING {', '.join(self.quote(c) + '::text' for c in pk)}"

    def fold(self, ident: exp.Identifier) -> str:
        return str(ident.this) if ident.quoted else str(ident.this).lower()


def open_session(target: Target) -> PostgresSession:
    """A session on a connection from the target's pool (created on first use)."""
    lease = contextlib.ExitStack()
    try:
        pool = lease.enter_context(_POOLS.lease(target.pool_key(), lambda: _new_pool(target)))
        return PostgresSession(pool, lease, _connect_args(target))
    except BaseException:
        lease.close()
        raise
