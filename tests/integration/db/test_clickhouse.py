"""`clickhouse` against real engines: the native protocol on the machine's clickhouse-server (18.16), the
HTTP protocol on ClickHouse 26.x (chdb behind the HTTP stand-in), and the server at
TIANGONG_TEST_CLICKHOUSE_URL when set. Each test gets a database of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.db.test_mysql import cancel_when_running
from tests.servers import free_port
from tests.servers.clickhouse import ENV, HTTP_PASSWORD, ClickHouseServer, chdb_http_server, env_server, native_server
from tests.unit.executors.harness import Harness, make_task, run_task
from wire.tasks import TaskStatus

SERVERS = ["native", "http", *(["env"] if os.environ.get(ENV) else [])]
USERS = "CREATE TABLE users (id UInt32, name String, age Nullable(UInt8)) ENGINE = MergeTree ORDER BY id"
SLOW = "SELECT sum(sleepEachRow(1)) FROM numbers(30) SETTINGS max_block_size = 1"
"""30 s on the server, one row a second (sleep functions refuse more than 3 s per block)."""


@pytest.fixture(scope="module")
def chdb_http() -> Iterator[ClickHouseServer]:
    with chdb_http_server() as server:
        yield server


@pytest.fixture(scope="module", params=SERVERS)
def ch(request: pytest.FixtureRequest) -> Iterator[ClickHouseServer]:
    """One engine per run of each test: native 18.16, HTTP 26.x (stand-in), and the env server."""
    if request.param == "http":
        yield request.getfixturevalue("chdb_http")
        return
    server = native_server() if request.param == "native" else env_server()
    yield server
    server.close()


@dataclass
class Db:
    """A database of the test's own on one server."""

    server: ClickHouseServer
    name: str

    def target(self, **extra: Any) -> dict[str, Any]:
        return self.server.target(self.name, **extra)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.server.query(sql.replace("{db}", self.name))


@pytest.fixture
def db(ch: ClickHouseServer) -> Iterator[Db]:
    with ch.database() as name:
        yield Db(ch, name)


@pytest.fixture
def db_second(ch: ClickHouseServer) -> Iterator[Db]:
    with ch.database() as name:
        yield Db(ch, name)


def clickhouse(command: str, db: Db, **params: Any) -> Any:
    params.setdefault("target", db.target())
    return make_task(command, type="clickhouse", **params)


def assert_no_secret(out: Any, ctx: Harness, secret: str = HTTP_PASSWORD) -> None:
    """The password shows nowhere a user can read."""
    assert secret not in out.result + out.error + repr(out.data)
    assert all(secret not in line for _, line in ctx.lines)


def test_ddl_insert_select_report_each_statement(db: Db, tmp_path: Path) -> None:
    script = f"""
        {USERS};
        INSERT INTO users VALUES (1, 'ann', 30), (2, 'bob', NULL), (3, 'cy', 50);
        INSERT INTO users SELECT number + 10, concat('n', toString(number)), NULL FROM numbers(4);
        SELECT id, name, age FROM users ORDER BY id LIMIT 3;
        SELECT currentDatabase() AS db;
    """
    out, ctx = run_task(clickhouse(script, db, metadata={"ticket": "CH-1"}), tmp_path)
    assert out.status is TaskStatus.success, out.error
    _, values, insert_select, select, current = out.data
    assert values["affected_rows"] == 3
    # 18.16 does not report written rows over the native protocol; a current server does.
    assert insert_select["affected_rows"] == (4 if db.server.reports_written_rows else 0)
    assert select["columns"] == ["id", "name", "age"]
    assert select["rows"] == [[1, "ann", 30], [2, "bob", None], [3, "cy", 50]]
    assert current["rows"] == [[db.name]]
    assert all(e["stage"] == "EXECUTED" and e["error"] == "" for e in out.data)
    assert out.result.startswith("Ticket: CH-1\n")
    assert "Order ID: 2\nStage: EXECUTED\nStatus: Execute Successfully\nAffected Rows: 3\n" in out.result
    assert "Rollback SQL" not in out.result
    assert any(line.startswith("[2/5] INSERT INTO users VALUES (1, 'ann', 30)") for _, line in ctx.lines)
    assert db.query("SELECT count() FROM {db}.users") == [(7,)]
    assert_no_secret(out, ctx)


def test_values_keep_their_types(db: Db, tmp_path: Path) -> None:
    """Over the native protocol the rows after VALUES are sent as INSERT ... SELECT with casts; they must
    arrive as the server's own VALUES parser (HTTP) would store them."""
    db.query(
        "CREATE TABLE {db}.kinds (id UInt64, s String, d Date, dec Nullable(Decimal(38, 20)),"
        " e Enum8('x' = 1, 'y' = 2), a Array(UInt16), t DateTime) ENGINE = MergeTree ORDER BY id"
    )
    script = r"""
        INSERT INTO kinds (id, s, d, dec, e, a, t) VALUES
            (18446744073709551615, 'it''s, (quoted) \'x\'', '2024-02-29', 0.1, 'y', [1, 2], '2024-01-02 03:04:05'),
            (2, '', '1970-01-02', NULL, 'x', [], '2024-01-02 03:04:05') -- a trailing comment
    """
    out, _ = run_task(clickhouse(script, db), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert out.data[0]["affected_rows"] == 2
    rows = db.query("SELECT id, s, toString(d), dec, e, a, toString(t) FROM {db}.kinds ORDER BY id")
    # 0.1 exactly: read as decimal text, not through a float (which would store 0.10000000000000000555).
    assert rows == [
        (2, "", "1970-01-02", None, "x", [], "2024-01-02 03:04:05"),
        (18446744073709551615, "it's, (quoted) 'x'", "2024-02-29", Decimal("0.1"), "y", [1, 2], "2024-01-02 03:04:05"),
    ]


def test_inline_data_in_other_formats(db: Db, tmp_path: Path) -> None:
    db.query("CREATE TABLE {db}.csv (id UInt32, s String) ENGINE = MergeTree ORDER BY id")
    out, _ = run_task(clickhouse("INSERT INTO csv FORMAT CSV 1,a", db), tmp_path)
    if db.server.protocol == "http":  # the server reads the inline data itself
        assert out.status is TaskStatus.success, out.error
        assert db.query("SELECT * FROM {db}.csv") == [(1, "a")]
        return
    assert out.status is TaskStatus.failed
    assert out.error == (
        "statement 1 failed: INSERT ... FORMAT CSV with inline data needs protocol http:"
        " over the native protocol only VALUES rows are supported"
    )


def test_max_rows_cuts_a_select_and_marks_it(db: Db, tmp_path: Path) -> None:
    out, _ = run_task(clickhouse("SELECT number FROM numbers(2500)", db, exec_options={"max_rows": 1000}), tmp_path)
    assert out.status is TaskStatus.success, out.error
    (entry,) = out.data
    assert len(entry["rows"]) == 1000 and entry["truncated"] is True
    assert entry["rows"][:2] == [[0], [1]]
    assert "Rows: 1000 (first 1000; cut at max_rows)" in out.result


def test_an_endless_select_cut_at_max_rows_stops_on_the_server(db: Db, tmp_path: Path) -> None:
    if not db.server.streams:
        pytest.skip("the HTTP stand-in hands over whole results, so an endless one never starts to arrive")
    started = time.monotonic()
    out, _ = run_task(clickhouse("SELECT number FROM system.numbers", db, exec_options={"max_rows": 10}), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert out.data[0]["rows"] == [[i] for i in range(10)] and out.data[0]["truncated"] is True
    assert time.monotonic() - started < 10
    # The server learns that the client left when it writes its next block: wait for that, boundedly.
    end = time.monotonic() + 10
    while db.server.running("system.numbers") and time.monotonic() < end:
        time.sleep(0.1)
    assert db.server.running("system.numbers") == 0


def test_failure_stops_there_and_earlier_statements_stay(db: Db, tmp_path: Path) -> None:
    script = f"""
        {USERS};
        INSERT INTO users (id, name) VALUES (1, 'kept');
        SELECT no_such_column FROM users;
        INSERT INTO users (id, name) VALUES (2, 'never');
    """
    out, ctx = run_task(clickhouse(script, db), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error.startswith("statement 3 failed: Code: 47. DB::Exception: ")
    assert "no_such_column" in out.error and "Stack trace" not in out.error
    assert [e["stage"] for e in out.data] == ["EXECUTED", "EXECUTED", "FAILED"]
    assert db.query("SELECT name FROM {db}.users") == [("kept",)]
    assert "Summary: 4 statements; 2 executed and committed; statement 3 failed: Code: 47." in out.result
    assert out.result.rstrip().endswith("1 not run")
    assert not any("rolled back" in line for _, line in ctx.lines)


def test_timeout_interrupts_the_statement_on_the_server(db: Db, tmp_path: Path) -> None:
    started = time.monotonic()
    out, _ = run_task(clickhouse(f"SELECT 1; {SLOW}", db, exec_options={"timeout_ms": 1500}), tmp_path)
    assert out.status is TaskStatus.timeout
    assert out.error == "statement 2 interrupted (timeout)"
    assert [e["stage"] for e in out.data] == ["EXECUTED", "INTERRUPTED"]
    # KILL QUERY ... SYNC returned before the task ended: the query is gone, not merely abandoned. And it
    # was the KILL: the max_execution_time backstop would only have stopped it after 1.5 + 5 s.
    assert db.server.running("sleepEachRow") == 0
    assert time.monotonic() - started < 6


def test_cancel_interrupts_the_statement_on_the_server(db: Db, tmp_path: Path) -> None:
    started = time.monotonic()
    setup = cancel_when_running(lambda: db.server.running("sleepEachRow"))
    out, _ = run_task(clickhouse(SLOW, db), tmp_path, setup=setup)
    assert out.status is TaskStatus.canceled
    assert out.error == "statement 1 interrupted (canceled)"
    assert db.server.running("sleepEachRow") == 0
    assert time.monotonic() - started < 15


def test_set_lasts_for_the_script_and_not_beyond(db: Db, tmp_path: Path) -> None:
    read = "SELECT value FROM system.settings WHERE name = 'max_threads'"
    out, _ = run_task(clickhouse(f"SET max_threads = 3; {read}", db), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert out.data[1]["rows"] == [["3"]]
    # The next task on the same target must not inherit the setting from a pooled connection or session.
    out, _ = run_task(clickhouse(read, db), tmp_path)
    assert out.data[0]["rows"] != [["3"]]


def test_two_targets_at_once_each_with_its_result(db: Db, db_second: Db, tmp_path: Path) -> None:
    targets = [db.target(name="first"), db_second.target(name="second")]
    script = f"{USERS}; INSERT INTO users (id, name) VALUES (1, 'x'); SELECT currentDatabase()"
    task = clickhouse(script, db, target=None, targets=targets, exec_options={"concurrency": 2})
    out, ctx = run_task(task, tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert [(d["target"], d["status"], d["results"][2]["rows"]) for d in out.data] == [
        ("first", "success", [[db.name]]),
        ("second", "success", [[db_second.name]]),
    ]
    assert "=== Target: first (success) ===" in out.result and "=== Target: second (success) ===" in out.result
    assert any(line.startswith("[second] [2/3] INSERT") for _, line in ctx.lines)
    assert db.query("SELECT name FROM {db}.users") == db_second.query("SELECT name FROM {db}.users") == [("x",)]


def test_connection_refused_fails_fast_without_showing_the_password(db: Db, tmp_path: Path) -> None:
    secret = "Refused-pw-" + HTTP_PASSWORD
    target = {**db.target(), "host": "127.0.0.1", "port": free_port(), "password": secret}
    started = time.monotonic()
    out, ctx = run_task(clickhouse("SELECT 1", db, target=target), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error.startswith(f"cannot connect to 127.0.0.1:{target['port']}/{db.name}: ")
    assert "refused" in out.error.lower()
    assert time.monotonic() - started < 5
    assert_no_secret(out, ctx, secret)


def test_wrong_password_fails_without_showing_it(db: Db, tmp_path: Path) -> None:
    secret = "Wrong-pw-" + HTTP_PASSWORD
    out, ctx = run_task(clickhouse("SELECT 1", db, target={**db.target(), "password": secret}), tmp_path)
    assert out.status is TaskStatus.failed
    # 18.16: Code 193 WRONG_PASSWORD; current servers: Code 516 AUTHENTICATION_FAILED.
    where = f"{db.server.host}:{db.server.port}/{db.name}"
    assert any(out.error.startswith(f"cannot connect to {where}: Code: {c}.") for c in (193, 516)), out.error
    assert "Stack trace" not in out.error
    assert_no_secret(out, ctx, secret)


def test_the_cloud_side_imports_no_driver() -> None:
    """The cloud imports the executor to validate requests; the drivers stay on the agent."""
    code = (
        "import sys; from executors.registry import get_executor; from wire.tasks import TaskRequest\n"
        "get_executor('clickhouse').validate(TaskRequest(type='clickhouse', command='SELECT 1',"
        " params={'target': {'host': 'ch', 'protocol': 'http'}}))\n"
        "assert not {'clickhouse_driver', 'clickhouse_connect'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def test_http_pool_keeps_five_idle_and_opens_at_most_ten(
    chdb_http: ClickHouseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seed 004's bounds on the HTTP clients: urllib3 keeps 5 connections, sessions take at most 10."""
    from executors.db import clickhouse_http, pools
    from executors.db.params import parse_params, resolve_targets

    monkeypatch.setattr(pools, "WAIT_SECONDS", 0.2)
    with chdb_http.database() as name:
        target = resolve_targets("clickhouse", parse_params({"target": chdb_http.target(name)}), {})[0]
        deadline = time.monotonic() + 30
        sessions = [clickhouse_http.open_session(target, deadline) for _ in range(pools.MAX_OPEN)]
        manager = sessions[0]._client.http
        assert (manager.connection_pool_kw["maxsize"], manager.connection_pool_kw["block"]) == (pools.MAX_IDLE, False)
        with pytest.raises(pools.PoolExhausted, match="all 10 connections to this server are busy"):
            clickhouse_http.open_session(target, deadline)
        sessions.pop().close(True)
        sessions.append(clickhouse_http.open_session(target, deadline))  # a slot freed is a slot taken
        for s in sessions:
            s.close(True)
        assert sessions[0]._pool.stats() == (pools.MAX_IDLE, pools.MAX_IDLE)
