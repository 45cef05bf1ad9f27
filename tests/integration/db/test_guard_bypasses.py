"""Ways around the dangerous-statement guard, tried on real MariaDB and PostgreSQL (review of issue 17).

Each script below deleted or changed every row of `t` (or committed what the result called rolled back)
while the guard let it through: a DELETE inside PostgreSQL's WITH, MySQL executable comments,
`DELETE IGNORE`, a column compared with itself, a WHERE that reads no column, `SET SESSION autocommit`,
`COMMIT AND CHAIN` dropping a READ ONLY block's mode. Now each is refused before anything of the
script runs, and the table is as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.db.conftest import MariaDb, PgDb
from tests.servers.clickhouse import ClickHouseServer, native_server
from tests.unit.executors.harness import make_task, run_task
from wire.tasks import TaskStatus


def _pg_table(pg: PgDb) -> None:
    pg.query("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
    pg.query("CREATE TABLE a (id INT PRIMARY KEY, v TEXT)")
    pg.query("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g")


def _my_table(db: MariaDb) -> None:
    db.query("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    db.query("INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_50")


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (
            "WITH d AS (DELETE FROM t RETURNING *) INSERT INTO a SELECT * FROM d",
            "statement 1 (INSERT): the DELETE inside it without WHERE changes every row",
        ),
        (
            "WITH d AS (UPDATE t SET v = 'x' RETURNING *) SELECT * INTO b FROM d",
            "statement 1 (SELECT): the UPDATE inside it without WHERE changes every row",
        ),
        ("DELETE FROM t WHERE id = id", "statement 1 (DELETE): DELETE with a WHERE comparing a column with itself"),
        ("UPDATE t SET v = 'x' WHERE NOT false", "statement 1 (UPDATE): UPDATE with a WHERE that reads no column"),
        ("MERGE INTO t USING a ON true WHEN MATCHED THEN DELETE", "statement 1 (MERGE): MERGE with an always-true"),
    ],
)
def test_postgres_wide_changes_are_refused(pg: PgDb, tmp_path: Path, script: str, reason: str) -> None:
    _pg_table(pg)
    pg.query("INSERT INTO a VALUES (1000, 'a')")
    out, _ = run_task(make_task(script, type="postgres", target=pg.target()), tmp_path)
    assert out.status == TaskStatus.failed, out.result
    assert out.error.startswith(f"command: {reason}"), out.error
    assert pg.query("SELECT count(*), count(*) FILTER (WHERE v = 'x') FROM t") == [(50, 0)]


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("DELETE FROM t WHERE id = 5 /*!00000 OR 1 */", "DELETE with a MySQL executable comment"),
        ("/*!40000 DELETE FROM t */", "DELETE with a MySQL executable comment"),
        ("/*M!100100 UPDATE t SET v = 'x' */", "UPDATE with a MySQL executable comment"),
        ("DELETE IGNORE FROM t WHERE 1", "DELETE with an always-true WHERE (1)"),
        ("UPDATE t SET v = 'x' WHERE `id` = `id`", "UPDATE with a WHERE comparing a column with itself"),
        ("DELETE FROM t WHERE '1' = 1", "DELETE with a WHERE that reads no column"),
    ],
)
def test_mariadb_wide_changes_are_refused(mariadb: MariaDb, tmp_path: Path, script: str, reason: str) -> None:
    _my_table(mariadb)
    out, _ = run_task(make_task(script, type="mysql", target=mariadb.target()), tmp_path)
    assert out.status == TaskStatus.failed, out.result
    assert out.error.startswith(f"command: statement 1 ({reason.split()[0]}): {reason}"), out.error
    assert mariadb.query("SELECT count(*), sum(v = 'x') FROM t") == [(50, 0)]


def test_mariadb_session_autocommit_is_refused(mariadb: MariaDb, tmp_path: Path) -> None:
    """With autocommit turned on by the script, a failed batch's "rolled back" statements stay committed."""
    _my_table(mariadb)
    script = "SET SESSION autocommit = 1;\nINSERT INTO t VALUES (100, 'n');\nINSERT INTO t VALUES (1, 'dup')"
    out, _ = run_task(make_task(script, type="mysql", target=mariadb.target()), tmp_path)
    assert out.status == TaskStatus.failed
    assert out.error.startswith("command: statement 1: SET AUTOCOMMIT is not supported in a script"), out.error
    assert mariadb.query("SELECT count(*) FROM t WHERE id = 100") == [(0,)]


def test_postgres_commit_and_chain_is_refused(pg: PgDb, tmp_path: Path) -> None:
    """AND CHAIN keeps READ ONLY for what follows: committing it plainly ran an UPDATE psql refuses."""
    _pg_table(pg)
    script = "BEGIN READ ONLY;\nSELECT 1;\nCOMMIT AND CHAIN;\nUPDATE t SET v = 'x' WHERE id = 1;\nCOMMIT"
    out, _ = run_task(make_task(script, type="postgres", target=pg.target()), tmp_path)
    assert out.status == TaskStatus.failed
    assert out.error.startswith("command: statement 3: COMMIT AND CHAIN is not supported in a script"), out.error
    assert pg.query("SELECT count(*) FILTER (WHERE v = 'x') FROM t") == [(0,)]


def test_mariadb_check_only_runs_no_derived_table(mariadb: MariaDb, tmp_path: Path) -> None:
    """MariaDB's EXPLAIN materializes a derived table or WITH query: a review of one ran the function in
    it (a row in a MyISAM table, which the review's rollback cannot take back)."""
    _my_table(mariadb)
    mariadb.query("CREATE TABLE audit (x INT) ENGINE = MyISAM")
    mariadb.query("CREATE FUNCTION f() RETURNS INT MODIFIES SQL DATA BEGIN INSERT INTO audit VALUES (1); RETURN 1; END")
    script = (
        "SELECT * FROM (SELECT f() AS a) d;\n"
        "WITH c AS (SELECT f() AS a) SELECT * FROM c;\n"
        "UPDATE t SET v = 'x' WHERE id IN (SELECT a FROM (SELECT f() AS a) d);\n"
        "UPDATE t SET v = 'x' WHERE id <= 10"
    )
    task = make_task(script, type="mysql", target=mariadb.target(), exec_options={"check_only": True})
    out, _ = run_task(task, tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert mariadb.query("SELECT count(*) FROM audit") == [(0,)]
    notes = [e["estimate_note"] for e in out.data]
    assert notes[:3] == ["estimate not available (not explained: MySQL/MariaDB's EXPLAIN would run its derived "
                         "tables or WITH queries)"] * 3  # fmt: skip
    assert notes[3] == "" and 1 <= out.data[3]["estimated_rows"] <= 20
    assert mariadb.query("SELECT count(*), sum(v = 'x') FROM t") == [(50, 0)]


def test_mariadb_compound_statement_is_not_a_transaction_start(mariadb: MariaDb, tmp_path: Path) -> None:
    """`BEGIN NOT ATOMIC ... END` was taken for a BEGIN with modes and sent as the block's opener: the
    DELETE in it, never judged, emptied the table."""
    _my_table(mariadb)
    script = "DELIMITER //\nBEGIN NOT ATOMIC DELETE FROM t; END//\nDELIMITER ;\nSELECT 1"
    out, _ = run_task(make_task(script, type="mysql", target=mariadb.target()), tmp_path)
    assert out.status == TaskStatus.failed, out.result
    assert out.error.startswith("command: statement 1: BEGIN NOT ATOMIC DELETE FROM t; END is not supported")
    assert mariadb.query("SELECT count(*) FROM t") == [(50,)]


def test_mariadb_executable_comment_ddl_is_a_batch_boundary(mariadb: MariaDb, tmp_path: Path) -> None:
    """`/*!40000 ALTER TABLE t DISABLE KEYS */` (mysqldump's) was an 'other' statement inside the batch: the
    server's implicit commit before it kept row 100, which the failed task reported as rolled back."""
    _my_table(mariadb)
    script = (
        "INSERT INTO t VALUES (100, 'n');\n/*!40000 ALTER TABLE t DISABLE KEYS */;\nINSERT INTO t VALUES (1, 'dup')"
    )
    out, _ = run_task(make_task(script, type="mysql", target=mariadb.target()), tmp_path)
    assert out.status == TaskStatus.failed
    assert [(e["index"], e["kind"], e["stage"]) for e in out.data] == [
        (1, "dml", "EXECUTED"),
        (2, "ddl", "EXECUTED"),
        (3, "dml", "FAILED"),
    ]
    assert mariadb.query("SELECT count(*) FROM t WHERE id = 100") == [(1,)]


@pytest.fixture(scope="module")
def native() -> Iterator[ClickHouseServer]:
    server = native_server()
    yield server
    server.close()


@pytest.mark.parametrize("mutation", ["ALTER TABLE t DELETE WHERE 1", "ALTER TABLE t UPDATE v = 'x' WHERE 1 = 1"])
def test_clickhouse_mutation_of_every_row_is_refused(native: ClickHouseServer, tmp_path: Path, mutation: str) -> None:
    """ClickHouse 18.16's ALTER TABLE ... DELETE/UPDATE WHERE <always true> was DDL to the guard: it ran."""
    with native.database() as name:
        native.query(f"CREATE TABLE {name}.t (id UInt32, v String) ENGINE = MergeTree ORDER BY id")
        native.query(f"INSERT INTO {name}.t SELECT number, toString(number) FROM system.numbers LIMIT 2")
        out, _ = run_task(make_task(mutation, type="clickhouse", target=native.target(name)), tmp_path)
        assert out.status == TaskStatus.failed, out.result
        assert out.error.startswith("command: statement 1 (ALTER TABLE): "), out.error
        assert "changes every row" in out.error
        assert native.query(f"SELECT count(), countIf(v = 'x') FROM {name}.t") == [(2, 0)]
