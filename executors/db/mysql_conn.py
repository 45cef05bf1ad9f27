"""Connections of the `mysql` type: pooled sessions, catalog reads for rollback SQL, interrupts."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlglot import exp

from executors.db import pools
from executors.db.params import Target
from executors.db.rollback import BackupDb, Column, Executed, run_with_backup
from executors.db.split import Statement
from executors.db.sql import SqlSession, StatementOutput

CONNECT_TIMEOUT_SECONDS = 10


def _connect_args(target: Target) -> dict[str, Any]:
    return {
        "host": target.host,
        "port": target.port,
        "user": target.user or "",
        "password": target.password or "",
        "database": target.database,
        "charset": "utf8mb4",
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "autocommit": False,
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

    # SqlSession
    def execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        if stmt.kind not in ("dml", "query", "ddl") or "@" in stmt.sql or "TEMPORARY" in stmt.sql.upper():
            self._clean = False
        if backup and self.transactional:
            b = run_with_backup(self, stmt, max_rows)
            e = b.executed
            return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated, b.rollback_sql, b.note)
        e = self.run(stmt.sql, max_rows, rows=stmt.kind == "query")
        return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def interrupt(self) -> None:
        import pymysql

        killer = pymysql.connect(**{**_connect_args(self.target), "database": None, "autocommit": True})
        try:
            with killer.cursor() as cur:
                cur.execute(f"KILL QUERY {int(self._thread_id)}")
        finally:
            killer.close()

    def close(self, reusable: bool) -> None:
        try:
            self._pool.put(self._item, reusable and self._clean)
        finally:
            self._lease.close()

    # BackupDb
    def run(self, sql: str, max_rows: int, rows: bool = False) -> Executed:
        import pymysql.cursors

        # Unbuffered whatever `rows` says: a huge SELECT streams and only max_rows + 1 rows are kept.
        with self.conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(sql)
            if cur.description is None:
                return Executed(max(cur.rowcount, 0), lastrowid=cur.lastrowid or None)
            got = cur.fetchmany(max_rows + 1)
            return Executed(0, [d[0] for d in cur.description], [list(r) for r in got[:max_rows]], len(got) > max_rows)

    def _catalog(self, sql: str, table: exp.Table) -> list[tuple[Any, ...]]:
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
