"""Connections of the `postgres` type: pooled sessions, catalog reads for rollback SQL, interrupts."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from executors.db import pools
from executors.db.params import Target
from executors.db.rollback import BackupDb, Executed, run_with_backup
from executors.db.split import Statement
from executors.db.sql import SqlSession, StatementOutput

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

CONNECT_TIMEOUT_SECONDS = 10
POOL_WAIT_SECONDS = 30


def _connect_args(target: Target) -> dict[str, Any]:
    args: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "dbname": target.database,
        "sslmode": target.sslmode,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": "tiangong",
    }
    if target.password:
        args["password"] = target.password
    return args


def _new_pool(target: Target) -> ConnectionPool:
    import psycopg
    from psycopg_pool import ConnectionPool

    args = _connect_args(target)
    # psycopg_pool retries a failing connect in the background until its timeout and then reports only
    # "couldn't get a connection": one direct connect first gives the caller the server's own reason.
    psycopg.connect(**args).close()
    # Seed 004's pool: 10 open, one hour's lifetime; psycopg_pool has no idle-count bound, so idle
    # connections beyond min_size close after max_idle seconds instead.
    return ConnectionPool(
        "",
        kwargs=args,
        min_size=0,
        max_size=pools.MAX_OPEN,
        max_lifetime=pools.MAX_LIFETIME_SECONDS,
        max_idle=pools.IDLE_SECONDS,
        timeout=POOL_WAIT_SECONDS,
        check=ConnectionPool.check_connection,
        open=True,
        name=f"tiangong-{target.host}:{target.port}",
    )


_POOLS: pools.PoolCache[ConnectionPool] = pools.PoolCache(lambda p: p.close(timeout=5))


class PostgresSession(SqlSession, BackupDb):
    """One pooled connection outside autocommit: the loop decides where transactions end."""

    dialect = "postgres"
    transactional = True

    def __init__(self, pool: ConnectionPool, lease: contextlib.ExitStack) -> None:
        self._pool = pool
        self._lease = lease
        self.conn: Any = pool.getconn()

    # SqlSession
    def execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        if backup:
            b = run_with_backup(self, stmt, max_rows)
            e = b.executed
            return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated, b.rollback_sql, b.note)
        e = self.run(stmt.sql, max_rows)
        return StatementOutput(e.rowcount, e.columns, e.rows, e.truncated)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def interrupt(self) -> None:
        # A cancel request on its own connection: the server stops the statement, which then fails
        # with QueryCanceled in the worker thread.
        self.conn.cancel_safe(timeout=5)

    def close(self, reusable: bool) -> None:
        try:
            if not reusable:
                with contextlib.suppress(Exception):
                    self.conn.rollback()
                self.conn.close()  # the pool replaces a closed connection
            self._pool.putconn(self.conn)
        finally:
            self._lease.close()

    # BackupDb
    def run(self, sql: str, max_rows: int) -> Executed:
        with self.conn.cursor() as cur:
            cur.execute(sql.encode())  # bytes: never taken for a query with placeholders
            if cur.description is None:
                return Executed(max(cur.rowcount, 0))
            rows = cur.fetchmany(max_rows + 1)
            affected = max(cur.rowcount, 0) if cur.statusmessage and not cur.statusmessage.startswith("SELECT") else 0
            return Executed(
                affected, [d.name for d in cur.description], [list(r) for r in rows[:max_rows]], len(rows) > max_rows
            )

    def _regclass(self, table: exp.Table) -> str:
        bare = table.copy()
        bare.set("alias", None)
        return bare.sql(dialect="postgres")  # keeps the script's quoting, so case folding matches

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
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum",
                (self._regclass(table),),
            )
            return [r[0] for r in cur.fetchall()]

    def exists(self, table: exp.Table) -> bool:
        with self.conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self._regclass(table),))
            row = cur.fetchone()
            return bool(row and row[0])

    def literal(self, value: Any) -> str:
        from psycopg import sql
        from psycopg.types.json import Jsonb

        if isinstance(value, (dict, list)):
            value = Jsonb(value)
        return str(sql.Literal(value).as_string(self.conn))

    def returning(self, stmt_sql: str, pk: list[str]) -> str | None:
        return f"{stmt_sql} RETURNING {', '.join(self.quote(c) for c in pk)}"


def open_session(target: Target) -> PostgresSession:
    """A session on a connection from the target's pool (created, after one probing connect, on first use)."""
    lease = contextlib.ExitStack()
    try:
        pool = lease.enter_context(_POOLS.lease(target.pool_key(), lambda: _new_pool(target)))
        return PostgresSession(pool, lease)
    except BaseException:
        lease.close()
        raise
