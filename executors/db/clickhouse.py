"""`clickhouse`: statements one by one over the native protocol (clickhouse-driver) or HTTP (clickhouse-connect).

ClickHouse has no transactions: each statement stands on its own and a failure leaves the earlier ones in
place, so there is no rollback SQL. Every statement runs under a query id of its own: a cancel or the
deadline stops it on the server with `KILL QUERY ... SYNC` over a second connection, and
`max_execution_time` ends it there should the agent not get to do so. The drivers are imported inside the
functions that use them: the cloud imports this module only to validate requests.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import threading
import time
import uuid
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from executors.db import pools
from executors.db.base import TargetRun
from executors.db.params import Target
from executors.db.split import Statement
from executors.db.sql import SqlExecutor, SqlSession, StatementOutput

CONNECT_TIMEOUT_SECONDS = 10
KILL_TIMEOUT_SECONDS = 10
"""How long KILL QUERY ... SYNC may wait for the statement to stop."""
BACKSTOP_SLACK_SECONDS = 5
"""`max_execution_time` is the time left plus this, so the agent's own KILL at the deadline comes first."""
POOL_WAIT_SECONDS = 30
SOCKET_SLACK_SECONDS = 60
"""A native connection's read timeout is the time left plus this: the deadline is enforced by KILL, not by
the socket, which only has to notice a server that vanished."""


class ClickHouseError(RuntimeError):
    """A statement failed on the server; the message is the server's, without its stack trace."""


class ClickHouseExecutor(SqlExecutor):
    """`clickhouse`: `target.protocol` native (port 9000, default) or http (port 8123)."""

    type: ClassVar[str] = "clickhouse"
    dialect: ClassVar[str] = "clickhouse"
    shows_rollback: ClassVar[bool] = False

    def driver_modules(self, targets: list[Target]) -> list[str]:
        names = super().driver_modules(targets)
        if any(t.protocol == "http" for t in targets):
            names += ["clickhouse_connect.driver.httpclient", "clickhouse_connect.driver.httputil"]
        if any(t.protocol != "http" for t in targets):
            names.append("clickhouse_driver")
        return names

    def connect(self, target: Target, run: TargetRun) -> SqlSession:
        # The loop's clock is time.monotonic() (asyncio's default); this runs in a worker thread without it.
        deadline = run.deadline
        if target.protocol == "http":
            return _open(_HTTP_POOLS, target, _HttpPool, lambda pool, lease: _HttpSession(pool, lease, deadline))
        return _open(_NATIVE_POOLS, target, _NativePool, lambda pool, lease: _NativeSession(pool, lease, deadline))


P = TypeVar("P")


def _open(
    cache: pools.PoolCache[P],
    target: Target,
    create: Callable[[Target], P],
    session: Callable[[P, contextlib.ExitStack], SqlSession],
) -> SqlSession:
    """A session on the target's pool (created on first use: creating may connect, and then fails fast);
    the session holds the pool's lease until it closes."""
    lease = contextlib.ExitStack()
    try:
        # pool_key() leaves out TLS: a plain and an https target on one port must not share clients.
        key = (*target.pool_key(), target.scheme, target.verify_tls)
        return session(lease.enter_context(cache.lease(key, lambda: create(target))), lease)
    except BaseException:
        lease.close()
        raise


class _ChSession(SqlSession):
    """What both protocols share: a query id per statement, the server-side backstop, and KILL QUERY."""

    transactional: ClassVar[bool] = False

    def __init__(self, lease: contextlib.ExitStack, deadline: float) -> None:
        self._lease = lease
        self._deadline = deadline
        self._query_id = ""
        self._stopped = False

    def _begin(self) -> tuple[str, dict[str, Any]]:
        """A fresh query id and the settings for the next query; refuses to start once interrupted."""
        if self._stopped:
            raise ClickHouseError("interrupted before the statement started")
        self._query_id = str(uuid.uuid4())
        left = max(1, math.ceil(self._deadline - time.monotonic()))
        return self._query_id, {"max_execution_time": left + BACKSTOP_SLACK_SECONDS}

    def interrupt(self) -> None:
        self._stopped = True
        killed = ""
        # The worker may move from one query to the next (the INSERT ... VALUES probe, then the insert)
        # while the first KILL is on its way: kill until the id holds still.
        while self._query_id and self._query_id != killed:
            killed = self._query_id
            self._kill(killed)

    @abstractmethod
    def _kill(self, query_id: str) -> None:
        """Run KILL QUERY for `query_id` over a connection other than the session's."""


# --- native protocol -------------------------------------------------------------------------------------


def _native_args(target: Target) -> dict[str, Any]:
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


class _NativePool:
    """clickhouse-driver clients of one target. A Client is one connection and not thread-safe, so each
    session takes one of its own: at most MAX_OPEN at once, MAX_IDLE kept, none older than MAX_LIFETIME."""

    def __init__(self, target: Target) -> None:
        self.args = _native_args(target)
        self._idle: deque[tuple[float, Any]] = deque()
        self._open = 0
        self._cond = threading.Condition()

    def get(self) -> tuple[float, Any]:
        from clickhouse_driver import Client, errors

        found: tuple[float, Any] | None = None
        stale: list[Any] = []
        with self._cond:
            if not self._cond.wait_for(lambda: self._idle or self._open < pools.MAX_OPEN, POOL_WAIT_SECONDS):
                raise ClickHouseError(f"all {pools.MAX_OPEN} connections to this server are busy")
            while self._idle and found is None:
                item = self._idle.pop()
                if time.monotonic() - item[0] < pools.MAX_LIFETIME_SECONDS:
                    found = item
                else:
                    stale.append(item[1])
                    self._open -= 1
            if found is None:
                self._open += 1
        for old in stale:
            old.disconnect()
        if found is not None:
            return found  # a dead socket is noticed by the driver's ping before the next query, and replaced
        client = Client(**self.args)
        try:
            client.connection.connect()  # now: a refused connection or a wrong password fails the task at once
        except BaseException as exc:
            client.disconnect()
            self._release()
            if isinstance(exc, errors.ServerException):
                raise ClickHouseError(_server_message(exc.code, exc.message)) from None
            raise
        return time.monotonic(), client

    def put(self, item: tuple[float, Any], reusable: bool) -> None:
        with self._cond:
            keep = reusable and time.monotonic() - item[0] < pools.MAX_LIFETIME_SECONDS
            keep = keep and len(self._idle) < pools.MAX_IDLE and item[1].connection.connected
            if keep:
                self._idle.append(item)
                self._cond.notify()
        if not keep:
            item[1].disconnect()
            self._release()

    def _release(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = list(self._idle), deque()
            self._open -= len(idle)
        for _, client in idle:
            client.disconnect()


_NATIVE_POOLS: pools.PoolCache[_NativePool] = pools.PoolCache(lambda p: p.close())


class _NativeSession(_ChSession):
    """One pooled clickhouse-driver client for one target."""

    def __init__(self, pool: _NativePool, lease: contextlib.ExitStack, deadline: float) -> None:
        super().__init__(lease, deadline)
        self._pool = pool
        self._item = pool.get()
        self._client: Any = self._item[1]
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
            inline = _inline_values(stmt.sql) if stmt.verb == "INSERT" else None
            if inline is not None:
                return self._insert_values(*inline)
            return self._run(stmt.sql, max_rows)
        except errors.ServerException as exc:
            raise ClickHouseError(_server_message(exc.code, exc.message)) from None

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
        rows = _values_rows(data)
        query_id, settings = self._begin()
        types = self._sample_block(head + " VALUES", query_id, settings)
        for n, row in enumerate(rows, 1):
            if len(row) != len(types):
                raise ClickHouseError(f"VALUES row {n} has {len(row)} values, the insert takes {len(types)}")
        sql = _insert_select(head, types, rows)
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

        killer = Client(**self._pool.args, send_receive_timeout=KILL_TIMEOUT_SECONDS)
        try:
            killer.execute(f"KILL QUERY WHERE query_id = '{query_id}' SYNC")  # a uuid4: nothing to escape
        finally:
            killer.disconnect()

    def close(self, reusable: bool) -> None:
        try:
            self._pool.put(self._item, reusable and not self._dirty)
        finally:
            self._lease.close()


def _server_message(code: int, message: str) -> str:
    return f"Code: {code}. {message.split('Stack trace:')[0].strip()}"


# --- INSERT ... VALUES over the native protocol ------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_DECIMAL_TYPE = re.compile(r"^(Nullable\(|LowCardinality\()*Decimal")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _skip(text: str, i: int) -> int:
    """The index after the quoted name, string or comment starting at `i` (or `i` + 1 for anything else)."""
    ch = text[i]
    if ch in "'\"`":
        j = i + 1
        while j < len(text):
            if text[j] == "\\":
                j += 2
            elif text[j] == ch:
                if text[j + 1 : j + 2] != ch:  # a doubled quote stands for itself
                    return j + 1
                j += 2
            else:
                j += 1
        raise ClickHouseError("cannot read the statement: a quote is not closed")
    if text.startswith("--", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end + 1
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        return len(text) if end < 0 else end + 2
    return i + 1


def _top_level(text: str) -> list[tuple[int, str]]:
    """(index, char) of what lies outside brackets: characters, opening brackets, and one quote character
    (or a space, for a comment) standing for each quoted name, string or comment."""
    out: list[tuple[int, str]] = []
    depth, i = 0, 0
    while i < len(text):
        ch, nxt = text[i], _skip(text, i)
        if nxt > i + 1 or ch in "'\"`":
            if depth == 0:
                out.append((i, ch if ch in "'\"`" else " "))
            i = nxt
            continue
        if ch in "([{":
            if depth == 0:
                out.append((i, ch))
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            out.append((i, ch))
        i = nxt
    return out


def _closing(text: str, i: int) -> int:
    """The index of the bracket closing the one at `i`."""
    depth = 0
    while i < len(text):
        ch, nxt = text[i], _skip(text, i)
        if ch in "([{" and nxt == i + 1:
            depth += 1
        elif ch in ")]}" and nxt == i + 1:
            depth -= 1
            if depth == 0:
                return i
        i = nxt
    raise ClickHouseError("cannot read the VALUES rows: a row is not closed")


def _inline_values(sql: str) -> tuple[str, str] | None:
    """(head, rows text) of an INSERT whose rows follow VALUES (or FORMAT Values); None for INSERT SELECT."""
    chars = _top_level(sql)
    flat = "".join(ch if ch.isalnum() or ch == "_" else " " for _, ch in chars)
    words = [(m.group().upper(), chars[m.start()][0], chars[m.end() - 1][0] + 1) for m in _WORD.finditer(flat)]
    for n, (word, start, end) in enumerate(words):
        if word in {"SELECT", "WITH"}:
            return None
        if word == "VALUES":
            return sql[:start].rstrip(), sql[end:]
        if word == "FORMAT":
            fmt = words[n + 1] if n + 1 < len(words) else ("", end, end)
            if fmt[0] != "VALUES":
                raise ClickHouseError(
                    f"INSERT ... FORMAT {fmt[0] or '?'} with inline data needs protocol http:"
                    " over the native protocol only VALUES rows are supported"
                )
            return sql[:start].rstrip(), sql[fmt[2] :]
    return None


def _values_rows(data: str) -> list[list[str]]:
    """The rows of a VALUES clause, each a list of value expressions (text)."""
    rows: list[list[str]] = []
    i = 0
    while True:
        # Rows may be separated by commas, whitespace and comments, as the VALUES format reads them.
        while i < len(data):
            nxt = _skip(data, i)
            if data[i].isspace() or data[i] == ",":
                i += 1
            elif nxt > i + 1 and data[i] in "-/":  # a comment
                i = nxt
            else:
                break
        if i >= len(data):
            break
        if data[i] != "(":
            raise ClickHouseError(f"cannot read the VALUES rows: expected '(' at {data[i : i + 20]!r}")
        end = _closing(data, i)
        body = data[i + 1 : end]
        rows.append([p.strip() for p in _cut(body, [j for j, ch in _top_level(body) if ch == ","])])
        i = end + 1
    if not rows:
        raise ClickHouseError("INSERT ... VALUES has no rows")
    return rows


def _cut(text: str, at: list[int]) -> list[str]:
    bounds = [-1, *at, len(text)]
    return [text[a + 1 : b] for a, b in itertools.pairwise(bounds)]


def _insert_select(head: str, types: list[tuple[str, str]], rows: list[list[str]]) -> str:
    """`head SELECT ...` over an array of tuples, each value cast to its column's type by the server."""

    def cast(value: str, type_name: str) -> str:
        quoted = type_name.replace("\\", "\\\\").replace("'", "\\'")
        if _DECIMAL_TYPE.match(type_name) and _NUMBER.match(value):
            value = f"'{value}'"  # read as text by the Decimal parser: exact, as the VALUES format reads it
        return f"CAST({value}, '{quoted}')"

    tuples = ", ".join(
        "tuple(" + ", ".join(cast(v, t) for v, (_, t) in zip(row, types, strict=True)) + ")" for row in rows
    )
    picks = ", ".join(f"tupleElement(r, {i})" for i in range(1, len(types) + 1))
    return f"{head} SELECT {picks} FROM (SELECT arrayJoin([{tuples}]) AS r)"


# --- HTTP ----------------------------------------------------------------------------------------------------


class _HttpPool:
    """One clickhouse-connect client per target (it is thread-safe over its own urllib3 pool); each session
    is a ClickHouse session of its own through `session_id`.

    Seed 004's bounds: urllib3 keeps at most MAX_IDLE connections (`maxsize`) and, with `block=False`,
    closes a surplus one when it comes back rather than making a caller wait for one; the MAX_OPEN bound
    is the session slots here, as a session runs one request at a time (a KILL QUERY on interrupt
    comes on top, so it is never stuck behind busy sessions). urllib3 has no per-connection lifetime:
    the whole client goes when unused for `pools.IDLE_SECONDS`."""

    def __init__(self, target: Target) -> None:
        from clickhouse_connect.driver.exceptions import DatabaseError
        from clickhouse_connect.driver.httpclient import HttpClient
        from clickhouse_connect.driver.httputil import get_pool_manager

        self.slots = threading.BoundedSemaphore(pools.MAX_OPEN)
        self.manager = get_pool_manager(maxsize=pools.MAX_IDLE, block=False, verify=target.verify_tls)
        try:
            # The handshake queries the server: a refused connection or a wrong password fails here at once.
            self.client = HttpClient(
                "https" if target.scheme == "https" else "http",
                target.host,
                target.port,
                target.user or "default",
                target.password or "",
                target.database or "default",
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                query_retries=0,  # a statement is never sent twice
                verify=target.verify_tls,
                pool_mgr=self.manager,
                autogenerate_session_id=False,
                autogenerate_query_id=False,
                client_name="tiangong",
            )
        except DatabaseError as exc:
            self.manager.clear()
            raise ClickHouseError(_http_message(exc)) from None
        except BaseException:
            self.manager.clear()
            raise

    def close(self) -> None:
        self.manager.clear()


_HTTP_POOLS: pools.PoolCache[_HttpPool] = pools.PoolCache(lambda p: p.close())


class _HttpSession(_ChSession):
    """Statements over HTTP in one ClickHouse session, so SET and temporary tables last for the script."""

    def __init__(self, pool: _HttpPool, lease: contextlib.ExitStack, deadline: float) -> None:
        if not pool.slots.acquire(timeout=POOL_WAIT_SECONDS):
            raise ClickHouseError(f"all {pools.MAX_OPEN} connections to this server are busy")
        super().__init__(lease, deadline)
        self._slots = pool.slots
        self._client = pool.client
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
            raise ClickHouseError(_http_message(exc)) from None
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

    def close(self, reusable: bool) -> None:
        try:
            self._slots.release()
        finally:
            self._lease.close()  # nothing else to give back: the session ends by itself on the server


def _http_message(exc: BaseException) -> str:
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
