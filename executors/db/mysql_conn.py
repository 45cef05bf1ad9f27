"""Connections of the `mysql` type: pooled sessions, catalog reads for rollback SQL, interrupts."""

from __future__ import annotations

import contextlib
import logging
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
"""The connection that sends a KILL: short, since a stop waits for it."""
_MUST_STOP = {
    1205,  # lock wait timeout: the statement itself would wait as long again
    1213,  # deadlock: the server rolled the whole transaction back, the batch is gone
    1317,  # query execution was interrupted (KILL QUERY)
    1927,  # connection was killed (MariaDB)
    1969,  # max_statement_time exceeded (MariaDB)
    3024,  # max_execution_time exceeded (MySQL)
    2006,  # server has gone away
    2013,  # lost connection during query
}
"""Errors of a backup read that end the statement instead of letting it run without a backup."""
log = logging.getLogger("tiangong.executors.db")


def _connect_args(target: Target) -> dict[str, Any]:
    from pymysql.constants import CLIENT

    return {
        "host": target.host,
        "port": target.port,
        "user": target.user or "",
        "password": target.password or "",
        "database": target.database,
        "charset": "utf8mb4",
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "autocommit": False,
        # Affected rows count the rows an UPDATE matched, not only those whose values changed, as on
        # PostgreSQL: an UPDATE to values the rows already hold reports them rather than 0.
        "client_flag": CLIENT.FOUND_ROWS,
    }


def _new_pool(target: Target) -> pools.ConnectionPool[Any]:
    """Seed 004's pool of pymysql connections; a connection coming back is rolled back before it is kept."""
    import pymysql

    args = _connect_args(target)
    return pools.ConnectionPool(
        lambda: pymysql.connect(**args), lambda conn: conn.close(), alive=_alive, reset=lambda conn: conn.rollback()
    )


def _alive(conn: Any) -> bool:
    """A ping without reconnecting: a connection the server dropped (wait_timeout) is replaced."""
    conn.ping(reconnect=False)
    return True


_POOLS: pools.PoolCache[pools.ConnectionPool[Any]] = pools.PoolCache(lambda p: p.close())


class MySqlSession(SqlSession, BackupDb):
    """One pooled pymysql connection: statements, catalog reads for backups, KILL QUERY to interrupt."""

    dialect = "mysql"

    def __init__(
        self, target: Target, pool: pools.ConnectionPool[Any], lease: contextlib.ExitStack, transactional: bool
    ) -> None:
        self.target = target
        self.transactional = transactional  # type: ignore[misc]
        self._lease = lease
        self._pool = pool
        self._item = pool.get()
        conn: Any = self._item.conn
        conn.autocommit(not transactional)
        self._thread_id = conn.thread_id()
        self.conn = conn
        self._clean = True
        """False once a statement may have changed session state (USE, SET, variables, temporary tables):
        such a connection is not handed to the next task."""
        self._guard = StatementGuard()

    # SqlSession
    def execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        with self._guard.busy():
            return self._execute(stmt, max_rows, backup)

    def _execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        if stmt.kind not in ("dml", "query", "ddl") or "@" in stmt.sql or "TEMPORARY" in stmt.sql.upper():
            self._clean = False
        if backup and self.transactional:
            b = run_with_backup(self, stmt, max_rows)
            e = b.executed
            return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated, b.rollback_sql, b.note)
        e = self.run(stmt.sql, max_rows, rows=stmt.kind == "query")
        return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated)

    def commit(self) -> None:
        with self._guard.busy(starts_work=False):
            self.conn.commit()

    def rollback(self) -> None:
        with self._guard.busy(starts_work=False):
            self.conn.rollback()

    def interrupt(self) -> None:
        # No statement starts after this; KILL QUERY is repeated while the worker is still busy, in case
        # the first one reached the server before the statement it was meant for.
        self._guard.stop(lambda: self._kill("QUERY"))

    def _kill(self, what: str) -> None:
        """KILL QUERY or KILL CONNECTION of this session's connection, sent over another one."""
        import pymysql

        args = {**_connect_args(self.target), "database": None, "autocommit": True}
        killer = pymysql.connect(**{**args, "connect_timeout": KILL_CONNECT_TIMEOUT_SECONDS})
        try:
            with killer.cursor() as cur:
                cur.execute(f"KILL {what} {int(self._thread_id)}")
        except pymysql.MySQLError as exc:
            if exc.args[0] != 1094:  # unknown thread id: it has already ended
                raise
        finally:
            killer.close()

    def close(self, reusable: bool) -> None:
        try:
            if self._guard.is_busy():
                self._drop()
                reusable = False
            self._pool.put(self._item, reusable and self._clean)
        finally:
            self._lease.close()

    def _drop(self) -> None:
        """A connection whose worker is still inside a statement: pymysql's close() would wait for that
        statement to return (it takes the reader's lock). The server ends the connection (and rolls its
        transaction back), then the socket is shut, which wakes the worker with "lost connection"."""
        try:
            self._kill("CONNECTION")
        except Exception as exc:  # the server may be unreachable: the socket is shut all the same
            log.warning("KILL CONNECTION of a stuck connection failed: %s", exc)
        sock = self.conn._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._guard.wait_idle(KILL_CONNECT_TIMEOUT_SECONDS)

    # BackupDb
    def run(self, sql: str, max_rows: int, rows: bool = False) -> Executed:
        import pymysql.cursors

        self._guard.check()
        # Unbuffered whatever `rows` says: a huge SELECT streams and only max_rows + 1 rows are kept.
        cur = self.conn.cursor(pymysql.cursors.SSCursor)
        try:
            cur.execute(sql)
            if cur.description is None:
                return Executed(max(cur.rowcount, 0), lastrowid=cur.lastrowid or None)
            got = cur.fetchmany(max_rows + 1)
            if len(got) > max_rows:
                self._end_result(cur)
            return Executed(0, [d[0] for d in cur.description], [list(r) for r in got[:max_rows]], len(got) > max_rows)
        finally:
            cur.close()

    def _end_result(self, cur: Any) -> None:
        """Stop a query whose first max_rows rows are read: closing an unbuffered cursor reads every row
        left, so the server is told to stop producing them first (its error ends the result)."""
        import pymysql

        try:
            self._kill("QUERY")
        except Exception as exc:  # e.g. no connection to spare: the rest is then read, as it would be unkilled
            log.warning("could not stop a query cut at max_rows, reading the rest of it: %s", exc)
        try:
            cur.close()
        except pymysql.OperationalError as exc:
            if exc.args[0] != 1317:
                raise

    def try_run(self, sql: str, max_rows: int) -> Executed | Exception:
        import pymysql

        try:
            return self.run(sql, max_rows, rows=True)
        except pymysql.MySQLError as exc:
            if self._guard.stopped or exc.args[0] in _MUST_STOP:
                raise
            return exc

    def _catalog(self, sql: str, table: exp.Table) -> list[tuple[Any, ...]]:
        self._guard.check()
        with self.conn.cursor() as cur:
            cur.execute(sql, (table.db or None, table.name))
            return list(cur.fetchall())

    def primary_key(self, table: exp.Table) -> list[str]:
        rows = self._catalog(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE())"
            " AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            table,
        )
        return [r[0] for r in rows]

    def columns(self, table: exp.Table) -> list[str]:
        return [c.name for c in self.column_info(table)]

    def column_info(self, table: exp.Table) -> list[Column]:
        # EXTRA, not IS_GENERATED (MySQL 5.7 has none): "VIRTUAL GENERATED", "STORED GENERATED",
        # "INVISIBLE", "on update current_timestamp(6)" (MySQL 8: "DEFAULT_GENERATED on update ..."),
        # "auto_increment".
        rows = self._catalog(
            "SELECT COLUMN_NAME, DATA_TYPE, LOWER(EXTRA) FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            table,
        )
        return [
            Column(
                str(name),
                str(type_).lower(),
                generated="virtual generated" in extra or "stored generated" in extra,
                on_update="on update" in extra,
                invisible="invisible" in extra,
                auto_increment="auto_increment" in extra,
            )
            for name, type_, extra in rows
        ]

    def image_columns(self, columns: list[Column]) -> list[exp.Expression]:
        return [_image_column(c) for c in columns]

    def restore_literal(self, column: Column, value: Any) -> str:
        if column.type == "timestamp" and value is not None:
            # Seconds since the epoch (see _image_column): exact whatever the time_zone of the session
            # that runs the rollback SQL. 0 is the zero date, which FROM_UNIXTIME cannot give.
            return "'0000-00-00 00:00:00'" if value == 0 else f"FROM_UNIXTIME({value})"
        return self.literal(value)

    def exists(self, table: exp.Table) -> bool:
        return bool(
            self._catalog(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE())"
                " AND TABLE_NAME = %s",
                table,
            )
        )

    def literal(self, value: Any) -> str:
        return str(self.conn.escape(value))

    def auto_increment(self, table: exp.Table) -> str | None:
        rows = self._catalog(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE())"
            " AND TABLE_NAME = %s AND EXTRA LIKE '%%auto_increment%%'",
            table,
        )
        return str(rows[0][0]) if rows else None

    def inserted_ids(self, first_id: int | None, count: int) -> list[int] | None:
        # A multi-row INSERT that names no key gets ids LAST_INSERT_ID(), + increment, ... from the
        # auto-increment column (innodb_autoinc_lock_mode 0 or 1; with 2 a concurrent insert may interleave).
        if not first_id or count <= 0:
            return None
        with self.conn.cursor() as cur:
            cur.execute("SELECT @@auto_increment_increment")
            row = cur.fetchone()
        step = int(row[0]) if row else 1
        return [first_id + i * step for i in range(count)]


def _image_column(column: Column) -> exp.Expression:
    """How a before-image reads `column` so that writing the value back restores it bit for bit."""
    col = exp.column(column.name, quoted=True)
    if column.type == "float":
        # The text protocol sends a FLOAT with 6 significant digits (123456.789 arrives as 123457):
        # `+ 0e0` reads it as a DOUBLE, which holds every FLOAT exactly and is sent in full.
        read: exp.Expression = exp.Add(this=col, expression=exp.Literal.number("0e0"))
    elif column.type == "timestamp":
        # A TIMESTAMP literal means local time in the session's time_zone: read the instant itself.
        read = exp.Anonymous(this="UNIX_TIMESTAMP", expressions=[col])
    else:
        return col
    return exp.Alias(this=read, alias=exp.to_identifier(column.name, quoted=True))


def open_session(target: Target, transactional: bool) -> MySqlSession:
    """A session on a connection from the target's pool (created on first use)."""
    lease = contextlib.ExitStack()
    try:
        pool = lease.enter_context(_POOLS.lease(target.pool_key(), lambda: _new_pool(target)))
        return MySqlSession(target, pool, lease, transactional)
    except BaseException:
        lease.close()
        raise
