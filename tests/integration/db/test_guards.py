"""Dangerous statements and check_only against real MariaDB, PostgreSQL and ClickHouse 18.16.

A dangerous statement (UPDATE/DELETE without WHERE, DROP, TRUNCATE) is refused before anything of the
script runs: at POST for an inline command, on the agent for a file. check_only executes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.services.errors import BadRequest
from cloud.services.tasks import validate_request
from executors.db.params import parse_params
from tests.integration.db.conftest import MariaDb, PgDb
from tests.servers.clickhouse import ClickHouseServer, native_server
from tests.unit.executors.harness import make_task, run_task
from wire.tasks import TaskRequest, TaskStatus

SCRIPT = "INSERT INTO t VALUES (100, 'new');\nUPDATE t SET v = 'x' WHERE id = 1;\nDELETE FROM t"
"""Statement 3 deletes every row: nothing of the script may run without allow_dangerous."""


def _pg_table(pg: PgDb, rows: int = 50) -> None:
    pg.query("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
    pg.query(f"INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, {rows}) g")
    pg.query("ANALYZE t")


def _my_table(db: MariaDb, rows: int = 50) -> None:
    db.query("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    db.query("INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_" + str(rows))
    db.query("ANALYZE TABLE t")


def _with_file(tmp_path: Path, text: str) -> Any:
    script = tmp_path / "script.sql"
    script.write_text(text)
    return lambda h: h.files.update({"file-1": script})


@pytest.mark.parametrize("type_", ["mysql", "doris", "postgres", "clickhouse"])
def test_inline_dangerous_statement_is_a_400_naming_it(type_: str) -> None:
    req = TaskRequest(type=type_, command=SCRIPT, params={"target": {"host": "db1"}})
    with pytest.raises(BadRequest) as err:
        validate_request(req)
    assert str(err.value) == (
        "command: statement 3 (DELETE): DELETE without WHERE changes every row; nothing was run: "
        "set exec_options.allow_dangerous to true to run it"
    )
    allowed = {"target": {"host": "db1"}, "exec_options": {"allow_dangerous": True}}
    validate_request(TaskRequest(type=type_, command=SCRIPT, params=allowed))


@pytest.mark.parametrize(
    ("statement", "verb"),
    [
        ("DROP TABLE t", "DROP TABLE"),
        ("TRUNCATE t", "TRUNCATE"),
        ("UPDATE t SET v = 'x'", "UPDATE"),
        ("UPDATE t SET v = 'x' WHERE 1 = 1", "UPDATE"),
        ("DELETE FROM t WHERE TRUE", "DELETE"),
    ],
)
def test_each_dangerous_kind_is_refused_at_post(statement: str, verb: str) -> None:
    req = TaskRequest(type="postgres", command=f"SELECT 1; {statement}", params={"target": {"host": "db1"}})
    with pytest.raises(BadRequest, match=rf"^command: statement 2 \({verb}\): .*exec_options\.allow_dangerous"):
        validate_request(req)


def test_file_script_is_refused_on_the_agent_before_anything_runs(pg: PgDb, tmp_path: Path) -> None:
    _pg_table(pg)
    task = make_task(type="postgres", file_id="file-1", target=pg.target())
    out, _ = run_task(task, tmp_path, setup=_with_file(tmp_path, SCRIPT))
    assert out.status == TaskStatus.failed
    assert out.error.startswith("file-1: statement 3 (DELETE): DELETE without WHERE changes every row")
    assert "exec_options.allow_dangerous" in out.error
    # Not even statements 1 and 2 ran.
    assert pg.query("SELECT count(*), count(*) FILTER (WHERE v = 'x') FROM t") == [(50, 0)]


def test_mariadb_file_script_is_refused_before_anything_runs(mariadb: MariaDb, tmp_path: Path) -> None:
    _my_table(mariadb)
    task = make_task(type="mysql", file_id="file-1", target=mariadb.target())
    out, _ = run_task(task, tmp_path, setup=_with_file(tmp_path, "INSERT INTO t VALUES (100, 'n');\nDROP TABLE t"))
    assert out.status == TaskStatus.failed
    assert out.error.startswith("file-1: statement 2 (DROP TABLE): DROP TABLE destroys the object and its data")
    assert mariadb.query("SELECT count(*) FROM t") == [(50,)]


def test_allow_dangerous_runs_it(pg: PgDb, tmp_path: Path) -> None:
    _pg_table(pg)
    out, _ = run_task(
        make_task(SCRIPT, type="postgres", target=pg.target(), exec_options={"allow_dangerous": True}), tmp_path
    )
    assert out.status == TaskStatus.success, out.error
    assert out.data[2]["affected_rows"] == 51
    assert pg.query("SELECT count(*) FROM t") == [(0,)]


def test_allow_all_is_not_a_sql_switch() -> None:
    """allow_all is the older name for mongo and elasticsearch only: it never allowed a DROP in SQL."""
    req = TaskRequest(
        type="mysql", command="DROP TABLE t", params={"target": {"host": "db1"}, "exec_options": {"allow_all": True}}
    )
    with pytest.raises(BadRequest, match=r"statement 1 \(DROP TABLE\)"):
        validate_request(req)


REVIEW = "UPDATE t SET v = 'x' WHERE id <= 10;\nDELETE FROM t;\nSELECT * FROM t;\nDROP TABLE t"


def test_postgres_check_only_estimates_and_executes_nothing(pg: PgDb, tmp_path: Path) -> None:
    _pg_table(pg, rows=1000)
    before = pg.query("SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM t")
    task = make_task(REVIEW, type="postgres", target=pg.target(), exec_options={"check_only": True})
    out, _ = run_task(task, tmp_path)

    assert out.status == TaskStatus.success, out.error
    assert [e["stage"] for e in out.data] == ["CHECKED"] * 4
    assert [e["kind"] for e in out.data] == ["dml", "dml", "query", "ddl"]
    update, delete, select, drop = out.data
    assert 5 <= update["estimated_rows"] <= 20  # the planner's guess for id <= 10
    assert delete["estimated_rows"] == 1000 and select["estimated_rows"] == 1000
    assert (drop["estimated_rows"], drop["estimate_note"]) == (None, "not applicable")
    assert update["warnings"] == [] and delete["warnings"] == [
        "dangerous: DELETE without WHERE changes every row (needs exec_options.allow_dangerous)"
    ]
    assert drop["warnings"][0].startswith("dangerous: DROP TABLE")
    assert "Estimated Rows: 1000" in out.result and "none executed (check_only); 2 dangerous" in out.result
    # Nothing ran: the same rows, and the table is still there.
    assert pg.query("SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM t") == before


def test_postgres_check_only_says_why_an_estimate_is_missing(pg: PgDb, tmp_path: Path) -> None:
    script = "CREATE TABLE n (a INT);\nINSERT INTO n VALUES (1)"
    task = make_task(script, type="postgres", target=pg.target(), exec_options={"check_only": True})
    out, _ = run_task(task, tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert out.data[1]["estimated_rows"] is None
    assert out.data[1]["estimate_note"].startswith('estimate not available: relation "n" does not exist')
    assert pg.query("SELECT to_regclass('n') IS NULL") == [(True,)]


def test_mariadb_check_only_without_goinception_estimates_and_executes_nothing(
    mariadb: MariaDb, tmp_path: Path
) -> None:
    _my_table(mariadb, rows=500)
    task = make_task(REVIEW, type="mysql", target=mariadb.target(), exec_options={"check_only": True})
    out, _ = run_task(task, tmp_path)

    assert out.status == TaskStatus.success, out.error
    update, delete, select, drop = out.data
    assert 1 <= update["estimated_rows"] <= 20  # a range on the primary key
    assert 400 <= delete["estimated_rows"] <= 600 and 400 <= select["estimated_rows"] <= 600
    assert drop["estimate_note"] == "not applicable"
    assert len(delete["warnings"]) == 1 and len(drop["warnings"]) == 1
    assert mariadb.query("SELECT count(*), sum(v = 'x') FROM t") == [(500, 0)]


@pytest.fixture(scope="module")
def native() -> Iterator[ClickHouseServer]:
    server = native_server()
    yield server
    server.close()


def test_clickhouse_check_only_has_no_estimate_and_executes_nothing(native: ClickHouseServer, tmp_path: Path) -> None:
    with native.database() as name:
        native.query(f"CREATE TABLE {name}.t (id UInt32, v String) ENGINE = MergeTree ORDER BY id")
        native.query(f"INSERT INTO {name}.t SELECT number, toString(number) FROM system.numbers LIMIT 2")
        script = "INSERT INTO t VALUES (3, 'c');\nTRUNCATE TABLE t;\nSELECT * FROM t"
        task = make_task(script, type="clickhouse", target=native.target(name), exec_options={"check_only": True})
        out, _ = run_task(task, tmp_path)

        assert out.status == TaskStatus.success, out.error
        assert [e["estimate_note"] for e in out.data] == [
            "estimate not available (no EXPLAIN on clickhouse)",
            "not applicable",
            "estimate not available (no EXPLAIN on clickhouse)",
        ]
        assert out.data[1]["warnings"] == ["dangerous: TRUNCATE deletes every row (needs exec_options.allow_dangerous)"]
        assert native.query(f"SELECT count() FROM {name}.t") == [(2,)]


def test_check_only_is_for_sql_types_only() -> None:
    for type_ in ("mysql", "doris", "postgres", "clickhouse"):
        parse_params({"target": {"host": "h"}, "exec_options": {"check_only": True}}, type_)
    with pytest.raises(ValueError, match=r"exec_options\.check_only: only the SQL types .* not mongo"):
        parse_params({"target": {"host": "h"}, "exec_options": {"check_only": True}}, "mongo")
