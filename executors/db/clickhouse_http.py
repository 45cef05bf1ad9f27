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
import socket
import threading
import uuid
from typing import Any

from executors.db import pools
from executors.db.clickhouse_session import (
    CONNECT_TIMEOUT_SECONDS,
    KILL_TIMEOUT_SECONDS,
    KILL_WAIT_SECONDS,
    ChSession,
    ClickHouseError,
)
from executors.db.params import Target
from executors.db.split import Statement
from executors.db.sql import StatementOutput


class InFlight:
    """The urllib3 connection each thread is using right now, so that an interrupt can drop the socket a
    statement's worker waits on (clients share one urllib3 pool, which hands out connections per request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_thread: dict[int, Any] = {}

    def taken(self, conn: Any) -> None:
        with self._lock:
            self._by_thread[threading.get_ident()] = conn

    def returned(self, conn: Any) -> None:
        with self._lock:
            for thread, held in list(self._by_thread.items()):
                if held is conn:
                    del self._by_thread[thread]

    def drop(self, thread: int) -> bool:
        """Shut the socket `thread` is using down (its read fails at once); whether there was one."""
        with self._lock:
            conn = self._by_thread.pop(thread, None)
        sock = getattr(conn, "sock", None)
        if sock is None:
            return False
        with contextlib.suppress(OSError):  # closed meanwhile: the statement returned after all
            sock.shutdown(socket.SHUT_RDWR)
        return True


def _tracked_manager(verify: bool, in_flight: InFlight) -> Any:
    """clickhouse-connect's pool manager, with connection pools that record which thread holds which
    connection in `in_flight`."""
    from clickhouse_connect.driver.httputil import get_pool_manager
    from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

    def tracked(base: Any) -> Any:
        class Tracked(base):
            def _get_conn(self, timeout: float | None = None) -> Any:
                conn = super()._get_conn(timeout)
                in_flight.taken(conn)
                return conn

            def _put_conn(self, conn: Any) -> None:
                in_flight.returned(conn)
                super()._put_conn(conn)

        return Tracked

    manager = get_pool_manager(maxsize=pools.MAX_IDLE, block=False, verify=verify)
    manager.pool_classes_by_scheme = {"http": tracked(HTTPConnectionPool), "https": tracked(HTTPSConnectionPool)}
    return manager


class HttpTarget:
    """One target's urllib3 pool and the pool of clients over it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.in_flight = InFlight()
        self.manager = _tracked_manager(target.verify_tls, self.in_flight)
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

    def __init__(self, http: HttpTarget, lease: contextlib.ExitStack, deadline: float, notes: list[str]) -> None:
        super().__init__(http.clients, lease, deadline, notes)
        self._in_flight = http.in_flight
        self._session_id = str(uuid.uuid4())
        self._worker: int | None = None
        """The thread running the current statement, whose connection an unconfirmed KILL drops."""

    def execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        from clickhouse_connect.driver.exceptions import DatabaseError
        from clickhouse_connect.driver.summary import QuerySummary

        query_id, settings = self._begin()
        settings.update(session_id=self._session_id, query_id=query_id)
        self._worker = threading.get_ident()
        try:
            if stmt.kind == "query":
                return self._query(stmt.sql, settings, max_rows)
            result = self._client.command(stmt.sql, settings=settings)
        except DatabaseError as exc:
            raise ClickHouseError(http_message(exc)) from None
        finally:
            self._worker = None
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
        from urllib3 import Timeout

        # Its own request, outside the session (which is busy with the statement), on another pooled
        # connection. The client's read timeout (300 s) would keep a canceled task running for minutes while
        # the server does not answer: this client is never used again after an interrupt, so it is cut here.
        self._client.timeout = Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=KILL_WAIT_SECONDS)
        self._client.command(
            f"KILL QUERY WHERE query_id = '{query_id}' SYNC", settings={"max_execution_time": KILL_TIMEOUT_SECONDS}
        )

    def _kill_failure(self, exc: BaseException) -> str:
        text = http_message(exc)
        return f"no answer within {KILL_WAIT_SECONDS} s" if "timed out" in text.lower() else text

    def _drop_statement(self) -> bool:
        worker = self._worker
        return worker is not None and self._in_flight.drop(worker)

    def reusable(self) -> bool:
        # Interrupted: its client's timeout was cut for the KILL, and its statement may have been dropped.
        return not self._stopped


def open_session(target: Target, deadline: float, notes: list[str] | None = None) -> HttpSession:
    """A session on the target's pool (created on first use); it holds the pool's lease until it closes."""
    lease = contextlib.ExitStack()
    try:
        # pool_key() leaves out TLS: a plain and an https target on one port must not share clients.
        key = (*target.pool_key(), target.scheme, target.verify_tls)
        http = lease.enter_context(POOLS.lease(key, lambda: HttpTarget(target)))
        return HttpSession(http, lease, deadline, [] if notes is None else notes)
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
