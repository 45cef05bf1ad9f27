"""`clickhouse` edge cases (issue 17 item 7): a KILL over HTTP that gets no answer, and INSERT ... VALUES over
the native protocol storing what the server's own VALUES parser stores (NULLs, omitted columns).

Servers: the machine's clickhouse-server 18.16 (native, compared with its own `clickhouse-client`), and the
chdb HTTP stand-in (ClickHouse 26.x), started with `--hold-kills` where a KILL must go unanswered.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from executors.db.clickhouse_session import KILL_WAIT_SECONDS
from executors.db.clickhouse_values import inline_values, insert_select, values_rows
from tests.integration.db.test_mysql import cancel_when_running
from tests.servers import unavailable
from tests.servers.clickhouse import ClickHouseServer, chdb_http_server, native_server
from tests.unit.executors.harness import make_task, run_task
from wire.tasks import TaskStatus

SLOW = "SELECT sum(sleepEachRow(1)) FROM numbers(20) SETTINGS max_block_size = 1"
"""20 s on the server, one row a second."""
TABLE = (
    "CREATE TABLE {db}.t (id UInt32, s String, n UInt8 DEFAULT 7, d Date, m String DEFAULT concat('x', toString(id)),"
    " a Array(UInt8), nn Nullable(String)) ENGINE = MergeTree ORDER BY id"
)
INSERTS = [
    "INSERT INTO t (id) VALUES (1)",
    "INSERT INTO t (id, nn) VALUES (2, NULL), (3, 'x')",
    "INSERT INTO t (id, s) VALUES (4, NULL)",
    "INSERT INTO t (id, n, m) VALUES (5, NULL, NULL), (6, 1, 'y')",
    "INSERT INTO t VALUES (7, 'a', 1, '2020-01-01', 'q', [1], NULL)",
]
"""Omitted columns, NULL in a Nullable column, NULL in non-Nullable columns (with and without a DEFAULT)."""


@pytest.fixture(scope="module")
def native() -> Iterator[ClickHouseServer]:
    server = native_server()
    yield server
    server.close()


@pytest.fixture(scope="module")
def chdb_http() -> Iterator[ClickHouseServer]:
    with chdb_http_server() as server:
        yield server


@pytest.fixture(scope="module")
def deaf_http() -> Iterator[ClickHouseServer]:
    """The HTTP stand-in, answering no KILL QUERY (as a server whose query is stuck where it cannot be canceled)."""
    with chdb_http_server("--hold-kills") as server:
        yield server


def clickhouse(command: str, target: dict[str, Any]) -> Any:
    return make_task(command, type="clickhouse", target=target)


def test_http_cancel_with_an_unanswered_kill_ends_within_seconds_and_says_so(
    deaf_http: ClickHouseServer, tmp_path: Path
) -> None:
    """Before: the KILL waited for clickhouse-connect's 300 s read timeout and the task stayed `running`."""
    with deaf_http.database() as name:
        canceled_at: list[float] = []
        setup = cancel_when_running(lambda: deaf_http.running("sleepEachRow"), canceled_at)
        out, ctx = run_task(clickhouse(SLOW, deaf_http.target(name)), tmp_path, setup=setup)
        took = time.monotonic() - canceled_at[0]
        still_running = deaf_http.running("sleepEachRow")
    note = (
        f"KILL QUERY got no confirmation (no answer within {KILL_WAIT_SECONDS} s): the connection was dropped;"
        " the statement may still be running on the server"
    )
    assert out.status is TaskStatus.canceled
    assert out.error == f"statement 1 interrupted (canceled); {note}"
    assert note in [line for _, line in ctx.lines]
    # The bounded KILL wait, then the dropped connection returns the worker at once (no 10 s grace, no 300 s).
    assert KILL_WAIT_SECONDS <= took < KILL_WAIT_SECONDS + 2.5, took
    # What the task says is what happened: the server never stopped the query (the stand-in ignores the KILL).
    assert still_running == 1


def test_http_cancel_with_an_answered_kill_says_nothing_more(chdb_http: ClickHouseServer, tmp_path: Path) -> None:
    with chdb_http.database() as name:
        canceled_at: list[float] = []
        setup = cancel_when_running(lambda: chdb_http.running("sleepEachRow"), canceled_at)
        out, ctx = run_task(clickhouse(SLOW, chdb_http.target(name)), tmp_path, setup=setup)
        took = time.monotonic() - canceled_at[0]
        assert chdb_http.running("sleepEachRow") == 0
    assert out.status is TaskStatus.canceled
    assert out.error == "statement 1 interrupted (canceled)"
    assert not any("KILL QUERY" in line for _, line in ctx.lines)
    assert took < KILL_WAIT_SECONDS, took


def clickhouse_client(server: ClickHouseServer, database: str, sql: str) -> str:
    """Run `sql` with the server's own command-line client: '' on success, else its error's first line."""
    exe = shutil.which("clickhouse-client")
    if exe is None:
        unavailable("clickhouse-client", "not on PATH")
    args = [exe, "--host", server.host, "--port", str(server.port), "--database", database, "--query", sql]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[0]


def test_native_values_store_what_clickhouse_client_stores(native: ClickHouseServer, tmp_path: Path) -> None:
    """Each INSERT through the executor (native protocol: rewritten to INSERT ... SELECT) and through
    clickhouse-client (the server parses the VALUES itself) into identical tables: the same outcome, the same rows."""
    with native.database() as ours, native.database() as theirs:
        for db in (ours, theirs):
            native.query(TABLE.format(db=db))
        outcomes = []
        for sql in INSERTS:
            out, _ = run_task(clickhouse(sql, native.target(ours)), tmp_path)
            refused = clickhouse_client(native, theirs, sql)
            outcomes.append((sql, out.status is TaskStatus.success, not refused))
            if out.status is not TaskStatus.success:
                # 18.16 has no NULL-as-default: both refuse a NULL for a non-Nullable column; ours names it.
                assert "Cannot convert NULL value to non-Nullable type" in out.error, out.error
                assert "tupleElement" not in out.error
        rows = "SELECT * FROM {db}.t ORDER BY id"
        stored = native.query(rows.format(db=ours))
        assert stored == native.query(rows.format(db=theirs))
    assert [(ok, same) for _, ok, same in outcomes] == [
        (True, True),
        (True, True),
        (False, False),
        (False, False),
        (True, True),
    ]
    assert [r[0] for r in stored] == [1, 2, 3, 7]
    assert stored[0][1:7] == ("", 7, date(1970, 1, 1), "x1", [], None)  # omitted: type defaults and DEFAULT expressions


def test_the_rewrite_stores_what_values_stores_on_a_current_server(chdb_http: ClickHouseServer) -> None:
    """ClickHouse 26.x turns a NULL for a non-Nullable column into the column's DEFAULT: the native path's
    INSERT ... SELECT (run here over HTTP) must store the same as the VALUES text itself."""
    with chdb_http.database() as ours, chdb_http.database() as theirs:
        for db in (ours, theirs):
            chdb_http.query(TABLE.format(db=db))
        columns = chdb_http.query(f"SELECT name, type FROM system.columns WHERE database = '{ours}' ORDER BY position")
        for sql in INSERTS:
            head, data = inline_values(sql) or ("", "")
            named = head.partition("(")[2].rstrip(") ").split(", ") if "(" in head else [c for c, _ in columns]
            types = [(c, t) for name in named for c, t in columns if c == name]
            chdb_http.query(insert_select(head.replace("INTO t", f"INTO {ours}.t"), types, values_rows(data)))
            chdb_http.query(sql.replace("INTO t", f"INTO {theirs}.t"))
        rows = "SELECT * FROM {db}.t ORDER BY id"
        stored = chdb_http.query(rows.format(db=ours))
        assert stored == chdb_http.query(rows.format(db=theirs))
    by_id = {r[0]: r for r in stored}
    assert (by_id[4][1], by_id[5][2], by_id[5][4]) == ("", 7, "x5")  # NULL became the column's default
