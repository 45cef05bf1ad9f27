"""Connections of the `mysql` type: pooled sessions, catalog reads for rollback SQL, interrupts."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlglot import exp

from executors.db import pools
from executors.db.params import Target
from executors.db.rollback import BackupDb, Executed, run_with_backup
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
        rows = self._catalog(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE())"
            " AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            table,
        )
        return [r[0] for r in rows]

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


def open_session(target: Target, transactional: bool) -> MySqlSession:
    """A session on a connection from the target's pool (created on first use)."""
    lease = contextlib.ExitStack()
    try:
        pool = lease.enter_context(_POOLS.lease(target.pool_key(), lambda: _new_pool(target)))
        return MySqlSession(target, pool, lease, transactional)
    except BaseException:
        lease.close()
        raise
