"""ClickHouse over its native protocol (clickhouse-driver): one pooled Client per session.

A Client is one connection and not thread-safe, so each session takes one of its own from the target's
`pools.ConnectionPool`. The driver is imported inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from executors.db import pools
from executors.db.clickhouse_session import (
    CONNECT_TIMEOUT_SECONDS,
    KILL_TIMEOUT_SECONDS,
    ChSession,
    ClickHouseError,
    server_message,
)
from executors.db.clickhouse_values import inline_values, insert_select, values_rows
from executors.db.params import Target
from executors.db.split import Statement
from executors.db.sql import StatementOutput

SOCKET_SLACK_SECONDS = 60
"""A connection's read timeout is the time left plus this: the deadline is enforced by KILL, not by the
socket, which only has to notice a server that vanished."""


def native_args(target: Target) -> dict[str, Any]:
    """clickhouse-driver's Client arguments for `target`."""
    return {
        "host": target.host,
        "port": target.port,
        "user": target.user or "default",
        "password": target.password or "",
        "database": target.database or "default",
        "secure": target.scheme == "https",
        "verify": target.verify_tls,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "client_name": "tiangong",
    }


def _connect(args: dict[str, Any]) -> Any:
    """A Client connected now: a refused connection or a wrong password fails the task at once."""
    from clickhouse_driver import Client, errors

    client = Client(**args)
    try:
        client.connection.connect()
    except errors.ServerException as exc:
        client.disconnect()
        raise ClickHouseError(server_message(exc.code, exc.message)) from None
    except BaseException:
        client.disconnect()
        raise
    return client


def new_pool(target: Target) -> pools.ConnectionPool[Any]:
    """Seed 004's pool of Clients; a dead socket is noticed by the driver's ping before the next query."""
    args = native_args(target)
    return pools.ConnectionPool(lambda: _connect(args), lambda client: client.disconnect())


POOLS: pools.PoolCache[pools.ConnectionPool[Any]] = pools.PoolCache(lambda p: p.close())


class NativeSession(ChSession):
    """One pooled clickhouse-driver client for one target."""

    def __init__(
        self,
        pool: pools.ConnectionPool[Any],
        args: dict[str, Any],
        lease: contextlib.ExitStack,
        deadline: float,
        notes: list[str],
    ) -> None:
        super().__init__(pool, lease, deadline, notes)
        self._args = args
        self._dirty = False
        conn = self._client.connection
        conn.send_receive_timeout = max(1.0, deadline - time.monotonic()) + SOCKET_SLACK_SECONDS
        if conn.socket is not None:
            conn.socket.settimeout(conn.send_receive_timeout)

    def execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        from clickhouse_driver import errors

        # SET and USE change this connection for whoever gets it next: such a connection is not reused.
        self._dirty = self._dirty or stmt.verb in {"SET", "USE"}
        try:
            inline = inline_values(stmt.sql) if stmt.verb == "INSERT" else None
            if inline is not None:
                return self._insert_values(*inline)
            return self._run(stmt.sql, max_rows)
        except errors.ServerException as exc:
            raise ClickHouseError(server_message(exc.code, exc.message)) from None

    def _run(self, sql: str, max_rows: int) -> StatementOutput:
        query_id, settings = self._begin()
        rows_iter = self._client.execute_iter(sql, settings=settings, query_id=query_id, with_column_types=True)
        columns: list[str] | None = None
        rows: list[list[Any]] = []
        for item in rows_iter:
            if columns is None:  # with_column_types: the first item names the columns
                columns = [name for name, _ in item]
                continue
            rows.append(list(item))
            if len(rows) > max_rows:
                # The rest of the result is still coming: dropping the connection stops the query (the
                # server notices at its next block) and the pool gets a fresh one.
                self._client.disconnect()
                break
        last = self._client.last_query
        written = last.progress.written_rows if last is not None else 0
        if not columns:
            return StatementOutput(written)
        return StatementOutput(0, columns, rows[:max_rows], len(rows) > max_rows)

    def _insert_values(self, head: str, data: str) -> StatementOutput:
        """INSERT with rows inline. Over TCP the server wants rows as typed blocks from the client (18.16
        ignores inline rows and waits for blocks), so on every server alike the column types come from the
        insert's sample block and the rows go as an INSERT ... SELECT the server itself parses and casts."""
        rows = values_rows(data)
        query_id, settings = self._begin()
        types = self._sample_block(head + " VALUES", query_id, settings)
        for n, row in enumerate(rows, 1):
            if len(row) != len(types):
                raise ClickHouseError(f"VALUES row {n} has {len(row)} values, the insert takes {len(types)}")
        sql = insert_select(head, types, rows)
        query_id, settings = self._begin()
        # The rewrite is larger than the VALUES text, which is exempt from these limits as inline data.
        size = len(sql) + 1
        settings.update(max_query_size=max(262_144, size), max_ast_elements=max(50_000, size))
        settings.update(max_expanded_ast_elements=max(500_000, size))
        self._client.execute(sql, settings=settings, query_id=query_id)
        return StatementOutput(len(rows))

    def _sample_block(self, sql: str, query_id: str, settings: dict[str, Any]) -> list[tuple[str, str]]:
        """The insert's (column, type) pairs: clickhouse-driver's own insert steps, with no rows sent."""
        c = self._client
        with c.disconnect_on_error(sql, settings):
            c.connection.send_query(sql, query_id=query_id)
            c.connection.send_external_tables(None)
            sample = c.receive_sample_block()
            c.send_data(sample, [])  # the empty block ends the data: nothing is inserted
            c.receive_end_of_insert_query()
        return list(sample.columns_with_types)

    def _kill(self, query_id: str) -> None:
        from clickhouse_driver import Client

        killer = Client(**self._args, send_receive_timeout=KILL_TIMEOUT_SECONDS)
        try:
            killer.execute(f"KILL QUERY WHERE query_id = '{query_id}' SYNC")  # a uuid4: nothing to escape
        finally:
            killer.disconnect()

    def reusable(self) -> bool:
        # SET and USE changed this connection; a dropped one (a result cut at max_rows) is gone.
        return not self._dirty and bool(self._client.connection.connected)


def open_session(target: Target, deadline: float, notes: list[str] | None = None) -> NativeSession:
    """A session on the target's pool (created on first use); it holds the pool's lease until it closes."""
    lease = contextlib.ExitStack()
    try:
        # pool_key() leaves out TLS: a plain and a secure target on one port must not share clients.
        key = (*target.pool_key(), target.scheme, target.verify_tls)
        pool = lease.enter_context(POOLS.lease(key, lambda: new_pool(target)))
        return NativeSession(pool, native_args(target), lease, deadline, [] if notes is None else notes)
    except BaseException:
        lease.close()
        raise
