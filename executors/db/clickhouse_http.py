"""ClickHouse over HTTP (clickhouse-connect): pooled clients sharing one urllib3 pool per target.

Each session is a ClickHouse session of its own through `session_id`, so SET and temporary tables last for
the script and never reach another task. Seed 004's bounds: the target's `pools.ConnectionPool` hands out
at most MAX_OPEN clients (a session runs one request at a time; a KILL QUERY on interrupt comes on top,
so it is never stuck behind busy sessions) and keeps MAX_IDLE; urllib3 keeps at most MAX_IDLE sockets
(`maxsize`) and, with `block=False`, closes a surplus one when it comes back. The driver is imported
inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import Any

from executors.db import pools
from executors.db.clickhouse_session import CONNECT_TIMEOUT_SECONDS, KILL_TIMEOUT_SECONDS, ChSession, ClickHouseError
from executors.db.params import Target
from executors.db.split import Statement
from executors.db.sql import StatementOutput


class HttpTarget:
    """One target's urllib3 pool and the pool of clients over it."""

    def __init__(self, target: Target) -> None:
        from clickhouse_connect.driver.httputil import get_pool_manager

        self.target = target
        self.manager = get_pool_manager(maxsize=pools.MAX_IDLE, block=False, verify=target.verify_tls)
        # A client's requests all go through the shared manager: dropping one needs no closing.
        self.clients: pools.ConnectionPool[Any] = pools.ConnectionPool(self._client, lambda client: None)

    def _client(self) -> Any:
        """A client made now: its handshake queries the server, so a refused connection or a wrong password
        fails the task at once."""
        from clickhouse_connect.driver.exceptions import DatabaseError
        from clickhouse_connect.driver.httpclient import HttpClient

        t = self.target
        try:
            return HttpClient(
                "https" if t.scheme == "https" else "http",
                t.host,
                t.port,
                t.user or "default",
                t.password or "",
                t.database or "default",
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                query_retries=0,  # a statement is never sent twice
                verify=t.verify_tls,
                pool_mgr=self.manager,
                autogenerate_session_id=False,
                autogenerate_query_id=False,
                client_name="tiangong",
            )
        except DatabaseError as exc:
            raise ClickHouseError(http_message(exc)) from None

    def close(self) -> None:
        self.clients.close()
        self.manager.clear()


POOLS: pools.PoolCache[HttpTarget] = pools.PoolCache(lambda p: p.close())


class HttpSession(ChSession):
    """Statements over HTTP in one ClickHouse session, so SET and temporary tables last for the script."""

    def __init__(self, pool: pools.ConnectionPool[Any], lease: contextlib.ExitStack, deadline: float) -> None:
        super().__init__(pool, lease, deadline)
        self._session_id = str(uuid.uuid4())

    def execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        from clickhouse_connect.driver.exceptions import DatabaseError
        from clickhouse_connect.driver.summary import QuerySummary

        query_id, settings = self._begin()
        settings.update(session_id=self._session_id, query_id=query_id)
        try:
            if stmt.kind == "query":
                return self._query(stmt.sql, settings, max_rows)
            result = self._client.command(stmt.sql, settings=settings)
        except DatabaseError as exc:
            raise ClickHouseError(http_message(exc)) from None
        if isinstance(result, QuerySummary):
            return StatementOutput(result.written_rows)
        # A statement that is not a query but answered rows (KILL QUERY, SYSTEM ...): its TabSeparated text.
        text = "\t".join(result) if isinstance(result, list) else str(result)
        lines = [line.split("\t") for line in text.splitlines()]
        return StatementOutput(0, None, lines[:max_rows], len(lines) > max_rows)

    def _query(self, sql: str, settings: dict[str, Any], max_rows: int) -> StatementOutput:
        rows: list[list[Any]] = []
        # Closing the stream early drops the response; the server cancels a read-only query whose client
        # is gone (clickhouse-connect turns on cancel_http_readonly_queries_on_client_close).
        with self._client.query_rows_stream(sql, settings=settings) as stream:
            columns = list(stream.source.column_names)
            for row in stream:
                rows.append(list(row))
                if len(rows) > max_rows:
                    break
        return StatementOutput(0, columns, rows[:max_rows], len(rows) > max_rows)

    def _kill(self, query_id: str) -> None:
        # Its own request, outside the session (which is busy with the statement), on another pooled connection.
        self._client.command(
            f"KILL QUERY WHERE query_id = '{query_id}' SYNC", settings={"max_execution_time": KILL_TIMEOUT_SECONDS}
        )


def open_session(target: Target, deadline: float) -> HttpSession:
    """A session on the target's pool (created on first use); it holds the pool's lease until it closes."""
    lease = contextlib.ExitStack()
    try:
        # pool_key() leaves out TLS: a plain and an https target on one port must not share clients.
        key = (*target.pool_key(), target.scheme, target.verify_tls)
        http = lease.enter_context(POOLS.lease(key, lambda: HttpTarget(target)))
        return HttpSession(http.clients, lease, deadline)
    except BaseException:
        lease.close()
        raise


def http_message(exc: BaseException) -> str:
    """clickhouse-connect's error cut down to the server's message (no URL, no version trailer), or for a
    network failure to its first cause (`Connection refused`) rather than urllib3's retry summary."""
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if root is not exc and not isinstance(root, type(exc)):
        reason = getattr(root, "reason", None)  # urllib3's MaxRetryError names the failure in `reason`
        return str(reason or root)
    text = str(exc).split("server response: ", 1)[-1]
    text = re.sub(r"\s*\(for url [^)]*\)\s*$", "", text)
    return re.sub(r"\s*\(version [^)]*\)\s*$", "", text).strip()
