"""A stand-in for ClickHouse's HTTP interface: a real HTTP server whose queries run in chdb (ClickHouse 26.x
in-process), so the real clickhouse-connect client can be tested where no current ClickHouse server runs.

It is not a ClickHouse server. What it implements of the HTTP interface: GET and POST on `/` with the
query in the `query` parameter, the body, or both (joined by a newline, as ClickHouse does); `/ping`;
`database`, `default_format`, `query_id`, `session_id`, `param_<name>` query parameters; every other
parameter is applied as a setting (`SET name = 'value'`); one user, `default`, authenticated by Basic auth,
`X-ClickHouse-User`/`X-ClickHouse-Key` headers or `user`/`password` parameters; gzip/deflate/zstd/lz4
request bodies; the answer in the requested format with `X-ClickHouse-Query-Id`, `-Format`, `-Timezone`,
`-Server-Display-Name` and `-Summary` (read and written rows) headers; errors as HTTP 500 (401 for a wrong
password) with `X-ClickHouse-Exception-Code` and a `Code: N. DB::Exception: ...` body.

What it does not: answers are never compressed and never streamed (chdb hands over a whole result);
`client_protocol_version` and ClickHouse's own `compress`/`decompress` block framing are ignored or
refused; sessions never expire. chdb assigns its own query ids and cannot take the client's, so the
client's `query_id` is kept in the query's `log_comment` setting, and in a `KILL QUERY` statement the
column `query_id` is read as `Settings['log_comment']`: a KILL QUERY by the client's id then cancels the
running query inside the engine, through a second engine connection, as a server would.

With `--hold-kills` it plays a server whose KILL QUERY never comes back (a query stuck where it cannot be
canceled): each KILL QUERY request is held unanswered for HOLD_KILL_SECONDS and the query goes on.

Run it as a process: `python chdb_http.py --port N [--password P] [--hold-kills]`; it prints
`listening on 127.0.0.1:N`.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import re
import sys
import tempfile
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Parameters the HTTP layer consumes; every other parameter is a setting.
NOT_SETTINGS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
    "user", "password", "quota_key", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "stacktrace", "enable_http_compression",
}  # fmt: skip
CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
}
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_KILL_QUERY = re.compile(r"^\s*KILL\s+QUERY\b", re.IGNORECASE)
_QUERY_ID_COLUMN = re.compile(r"\bquery_id\b")
_CODE = re.compile(r"Code: (\d+)\.")
AUTH_FAILED = 516
HOLD_KILL_SECONDS = 600.0
"""How long `--hold-kills` holds a KILL QUERY request (longer than any test waits)."""


class ClickHouseError(Exception):
    """An error answered the way ClickHouse answers it."""

    def __init__(self, code: int, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.code, self.status = code, status


class Engine:
    """chdb's embedded server on one path; each request or session gets a connection of its own."""

    def __init__(self, path: str, password: str) -> None:
        import chdb

        self._connect = lambda: chdb.connect(path)
        self.password = password
        self.admin = self._connect()
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")
        self._sessions: dict[str, tuple[Any, threading.Lock]] = {}
        self._lock = threading.Lock()
        self.hold_kills = False
        self.never = threading.Event()
        """Never set: a held KILL waits on it."""

    def _scalar(self, sql: str) -> str:
        return bytes(self.admin.query(sql, "TabSeparated").bytes()).decode().strip()

    def has_result(self, sql: str) -> bool:
        """Whether the statement returns a result set (a read, or KILL QUERY's list), by the engine's parser."""
        kind = self.admin._conn.classify_query(sql)["query_class"]
        return kind.name == "READ_ONLY" or bool(_KILL_QUERY.match(sql))

    def connection(self, session_id: str | None) -> tuple[Any, threading.Lock | None]:
        """A fresh connection, or the session's (locked: ClickHouse refuses two queries in one session)."""
        if not session_id:
            return self._connect(), None
        with self._lock:
            if session_id not in self._sessions:
                self._sessions[session_id] = (self._connect(), threading.Lock())
            conn, lock = self._sessions[session_id]
        if not lock.acquire(blocking=False):
            raise ClickHouseError(373, f"Session {session_id} is locked by a concurrent client. (SESSION_IS_LOCKED)")
        return conn, lock


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def run_query(engine: Engine, params: dict[str, str], sql: str) -> tuple[bytes, dict[str, str]]:
    """Run one request's query; (body, extra headers). Raises ClickHouseError."""
    query_id = params.get("query_id") or str(uuid.uuid4())
    fmt = params.get("default_format") or "TabSeparated"
    m = _TRAILING_FORMAT.search(sql)
    if m:
        fmt = m.group(1)  # the query's own FORMAT clause wins, as in ClickHouse
    if _KILL_QUERY.match(sql):
        if engine.hold_kills:
            engine.never.wait(HOLD_KILL_SECONDS)
        sql = _QUERY_ID_COLUMN.sub("Settings['log_comment']", sql)
    conn, lock = engine.connection(params.get("session_id"))
    try:
        if params.get("database"):
            conn.query(f"USE {_identifier(params['database'])}", "TabSeparated")
        for name, value in params.items():
            if name not in NOT_SETTINGS and not name.startswith("param_"):
                conn.query(f"SET {_identifier(name)} = {_literal(value)}", "TabSeparated")
        conn.query(f"SET log_comment = {_literal(query_id)}", "TabSeparated")
        bound = {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")}
        started = time.perf_counter_ns()
        result = conn.query(sql, fmt, params=bound)
        elapsed = time.perf_counter_ns() - started
    except ClickHouseError:
        raise
    except Exception as exc:  # chdb raises RuntimeError/ChdbError with ClickHouse's own message
        message = str(exc).strip()
        code = _CODE.search(message)
        raise ClickHouseError(int(code.group(1)) if code else 1002, message) from None
    finally:
        if lock is not None:
            lock.release()
        elif conn is not None:
            conn.close()
    body = bytes(result.bytes())
    summary = {
        "read_rows": str(result.rows_read()),
        "read_bytes": str(result.bytes_read()),
        "written_rows": str(result.rows_written()),
        "written_bytes": str(result.bytes_written()),
        "total_rows_to_read": "0",
        "result_rows": "0",
        "result_bytes": str(len(body)),
        "elapsed_ns": str(elapsed),
    }
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",
        "X-ClickHouse-Query-Id": query_id,
        "X-ClickHouse-Timezone": engine.timezone,
        "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
    }
    if engine.has_result(sql):  # ClickHouse names the format only for statements that return a result set
        headers["Content-Type"] = CONTENT_TYPES.get(fmt, "application/octet-stream")
        headers["X-ClickHouse-Format"] = fmt
    return body, headers


def _decode_body(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "zstd":
        import zstd  # a clickhouse-driver dependency

        return bytes(zstd.decompress(data))
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(data))
    raise ClickHouseError(36, f"Unknown HTTP compression method: {encoding}. (BAD_ARGUMENTS)", 400)


class Handler(BaseHTTPRequestHandler):
    """One request: authenticate, assemble the query, run it, answer like ClickHouse."""

    protocol_version = "HTTP/1.1"  # keep-alive, as clickhouse-connect's urllib3 pool expects
    server_version = "chdb-http-stand-in"
    engine: Engine

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read results, not access logs
        return None

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self._read_body())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self, raw: bytes) -> None:
        url = urlsplit(self.path)
        if url.path.rstrip("/") == "/ping":
            self._answer(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            self._authenticate(params)
            if params.get("decompress") in ("1", "true"):
                raise ClickHouseError(48, "ClickHouse's compressed request framing is not supported by the stand-in")
            body = _decode_body(raw, self.headers.get("Content-Encoding", "")).decode()
            sql = params.get("query", "")
            sql = f"{sql}\n{body}" if sql and body else sql or body
            if not sql.strip():
                raise ClickHouseError(62, "Empty query. (SYNTAX_ERROR)", 400)
            out, headers = run_query(self.engine, params, sql)
            self._answer(200, out, headers)
        except ClickHouseError as exc:
            text = f"Code: {exc.code}. DB::Exception: " if not str(exc).startswith("Code:") else ""
            text += f"{exc} (version {self.engine.version})\n"
            self._answer(exc.status, text.encode(), {"X-ClickHouse-Exception-Code": str(exc.code)})

    def _authenticate(self, params: dict[str, str]) -> None:
        user = self.headers.get("X-ClickHouse-User") or params.get("user")
        password = self.headers.get("X-ClickHouse-Key") or params.get("password") or ""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        user = user or "default"
        if user != "default" or password != self.engine.password:
            raise ClickHouseError(
                AUTH_FAILED,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name."
                " (AUTHENTICATION_FAILED)",
                401,
            )

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb-http-stand-in")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", default="", help="the password of the user `default`")
    parser.add_argument("--hold-kills", action="store_true", help="never answer KILL QUERY (see the docstring)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tiangong-chdb-") as path:
        Handler.engine = Engine(path, args.password)
        Handler.engine.hold_kills = args.hold_kills
        server = ThreadingHTTPServer((args.host, args.port), Handler)
        server.daemon_threads = True
        print(f"listening on {args.host}:{server.server_address[1]} (chdb {Handler.engine.version})", flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
