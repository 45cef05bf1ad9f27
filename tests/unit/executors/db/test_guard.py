"""The whole-script check: which statements are dangerous, which transaction statements are refused."""

from __future__ import annotations

import pytest

from executors.db.guard import ScriptRefused, check_script, dangerous, transaction_start
from executors.db.split import split_sql


def _first(sql: str, dialect: str = "postgres") -> str | None:
    return dangerous(split_sql(sql, dialect)[0], dialect)


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("DELETE FROM t", "postgres"),
        ("delete from t -- WHERE id = 1", "postgres"),
        ("UPDATE t SET a = 1", "mysql"),
        ("UPDATE t SET a = 1 LIMIT 10", "mysql"),
        ("DELETE t1 FROM t1 JOIN t2 ON t1.a = t2.a", "mysql"),
        ("WITH x AS (SELECT 1) DELETE FROM t", "postgres"),
        ("UPDATE t SET a = 1 WHERE 1 = 1", "postgres"),
        ("UPDATE t SET a = 1 WHERE 1", "mysql"),
        ("DELETE FROM t WHERE TRUE", "postgres"),
        ("DELETE FROM t WHERE (id = 3 OR 'a' = 'a')", "postgres"),
        ("DROP TABLE t", "mysql"),
        ("DROP DATABASE shop", "postgres"),
        ("drop index i", "postgres"),
        ("TRUNCATE t", "postgres"),
        ("TRUNCATE TABLE t", "clickhouse"),
        ("DROP TABLE IF EXISTS t", "clickhouse"),
        # Review of issue 17: each of these passed the guard and changed every row.
        ("WITH d AS (DELETE FROM t RETURNING *) INSERT INTO a SELECT * FROM d", "postgres"),
        ("WITH d AS (UPDATE t SET v = 1 RETURNING *) SELECT * FROM d", "postgres"),
        ("MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE", "postgres"),
        ("DELETE FROM t WHERE id = id", "postgres"),
        ("DELETE FROM t WHERE t.id >= id", "mysql"),
        ("DELETE FROM t WHERE id = 3 OR (`id` = `id`)", "mysql"),
        ("DELETE FROM t WHERE NOT 0", "mysql"),
        ("DELETE FROM t WHERE '1'", "mysql"),
        ("DELETE FROM t WHERE '1' = 1", "mysql"),
        ("DELETE FROM t WHERE 2 > 1", "mysql"),
        ("DELETE FROM t WHERE 1 IN (1)", "mysql"),
        ("DELETE FROM t WHERE 'x' IS NOT NULL", "postgres"),
        ("DELETE FROM t WHERE EXISTS (SELECT 1)", "postgres"),
        ("DELETE IGNORE FROM t WHERE 1", "mysql"),
        ("UPDATE IGNORE t SET a = 1 WHERE 1", "mysql"),
        ("/* c */ DELETE IGNORE FROM t WHERE TRUE", "mysql"),
        ("/*! DELETE FROM t */", "mysql"),
        ("/*!40000 DELETE FROM t */", "mysql"),
        ("/*M!100100 DELETE FROM t */", "mysql"),
        ("DELETE FROM t WHERE id = 5 /*!00000 OR 1 */", "mysql"),
        ("DELETE FROM t WHERE id = 5 /*!00000 OR 1 */", "doris"),
        ("/*!50001 DROP VIEW IF EXISTS v */", "mysql"),
        ("ALTER TABLE t DELETE WHERE 1", "clickhouse"),
        ("ALTER TABLE t UPDATE v = 1 WHERE 1 = 1", "clickhouse"),
    ],
)
def test_dangerous(sql: str, dialect: str) -> None:
    assert _first(sql, dialect) is not None


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("DELETE FROM t WHERE id = 1", "postgres"),
        ("UPDATE t SET a = 1 WHERE id IN (SELECT id FROM u)", "postgres"),
        ("UPDATE s SET stock = stock--1 WHERE id = 1", "mysql"),
        ("DELETE FROM t WHERE id = 1 AND 1 = 1", "postgres"),
        ("DELETE FROM t WHERE 1 = 0", "postgres"),
        ("INSERT INTO t SELECT * FROM u", "postgres"),
        ("SELECT * FROM t", "mysql"),
        ("CREATE TABLE t (a INT)", "postgres"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM t; SELECT 1 $$", "postgres"),
        ("DELETE FROM t WHERE 1 = 2 OR FALSE", "mysql"),
        ("UPDATE t SET v = 1 WHERE id = id + 1", "postgres"),
        ("DELETE FROM t WHERE t.id = u.id", "mysql"),
        ("INSERT INTO t VALUES (1, 2) ON DUPLICATE KEY UPDATE v = 2", "mysql"),
        ("INSERT INTO t VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET v = 2", "postgres"),
        ("SELECT * FROM t FOR UPDATE", "mysql"),
        ("ALTER TABLE t MODIFY ts TIMESTAMP ON UPDATE CURRENT_TIMESTAMP", "mysql"),
        ("CREATE TABLE c (p INT REFERENCES p (id) ON DELETE CASCADE ON UPDATE CASCADE)", "postgres"),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", "postgres"),
        ("ALTER TABLE t DELETE WHERE id = 5", "clickhouse"),
        ("/*!40101 SET NAMES utf8 */", "mysql"),
        ("DELETE FROM t WHERE id = 5 /* OR 1 */", "mysql"),
        ("DELIMITER //\nCREATE PROCEDURE p() BEGIN DELETE FROM t; END//", "mysql"),
    ],
)
def test_not_dangerous(sql: str, dialect: str) -> None:
    assert _first(sql, dialect) is None


def test_refusal_names_the_first_statement_and_the_option() -> None:
    statements = split_sql("SELECT 1; DELETE FROM a; DROP TABLE b", "postgres")
    with pytest.raises(ScriptRefused) as err:
        check_script(statements, "postgres", allow_dangerous=False)
    assert str(err.value) == (
        "statement 2 (DELETE): DELETE without WHERE changes every row (and 1 more); nothing was run: "
        "set exec_options.allow_dangerous to true to run it"
    )
    found = check_script(statements, "postgres", allow_dangerous=True)
    assert [(f.index, f.verb) for f in found] == [(2, "DELETE"), (3, "DROP TABLE")]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("BEGIN", None),
        ("BEGIN WORK", None),
        ("BEGIN READ ONLY", "SET TRANSACTION READ ONLY"),
        ("begin transaction isolation level serializable", "SET TRANSACTION isolation level serializable"),
        ("/* c */ START TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ",
         "SET TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ"),
    ],
)  # fmt: skip
def test_postgres_transaction_start(sql: str, expected: str | None) -> None:
    assert transaction_start(split_sql(sql, "postgres")[0], "postgres") == expected


def test_mysql_starts_with_the_scripts_own_statement() -> None:
    stmt = split_sql("START TRANSACTION READ ONLY", "mysql")[0]
    assert transaction_start(stmt, "mysql") == "START TRANSACTION READ ONLY"


@pytest.mark.parametrize(
    ("script", "dialect", "message"),
    [
        ("UPDATE t SET a = 1 WHERE id = 1; ROLLBACK", "postgres", "statement 2 (ROLLBACK): ROLLBACK outside"),
        ("BEGIN; ROLLBACK AND CHAIN", "postgres", "statement 2: ROLLBACK AND CHAIN is not supported"),
        ("BEGIN; RELEASE SAVEPOINT a", "postgres", "statement 2: RELEASE is not supported"),
        ("SET autocommit = 1", "mysql", "statement 1: SET AUTOCOMMIT is not supported"),
        ("SET SESSION autocommit = 1", "mysql", "statement 1: SET AUTOCOMMIT is not supported"),
        ("SET @@session.autocommit = 1", "mysql", "statement 1: SET AUTOCOMMIT is not supported"),
        ("SET NAMES utf8, @@autocommit = 1", "mysql", "statement 1: SET AUTOCOMMIT is not supported"),
        ("BEGIN READ ONLY; COMMIT AND CHAIN; COMMIT", "postgres", "statement 2: COMMIT AND CHAIN is not supported"),
        ("BEGIN; ROLLBACK PREPARED 'x'", "postgres", "statement 2: ROLLBACK PREPARED 'x' is not supported"),
        ("COMMIT PREPARED 'x'", "postgres", "statement 1: COMMIT PREPARED 'x' is not supported"),
        ("BEGIN; COMMIT RELEASE", "mysql", "statement 2: COMMIT RELEASE is not supported"),
        ("DELIMITER //\nBEGIN NOT ATOMIC DELETE FROM t; END//", "mysql", "statement 1: BEGIN NOT ATOMIC DELETE"),
        ("BEGIN; CREATE INDEX CONCURRENTLY i ON t (a); COMMIT", "postgres", "statement 2 (CREATE INDEX)"),
        ("START TRANSACTION READ ONLY; CREATE TABLE x (a INT); COMMIT", "mysql", "statement 2 (CREATE TABLE)"),
        ("BEGIN; CREATE TABLE x (a INT); ROLLBACK", "mysql", "statement 2 ended the block"),
        ("BEGIN; INSERT INTO t VALUES (1); ROLLBACK", "clickhouse", "clickhouse commits each statement"),
        ("BEGIN READ ONLY; SELECT 1; COMMIT", "doris", "doris has no transactions"),
    ],
)
def test_refused_transaction_statements(script: str, dialect: str, message: str) -> None:
    with pytest.raises(ScriptRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_script(split_sql(script, dialect), dialect, allow_dangerous=True)


@pytest.mark.parametrize(
    ("script", "dialect"),
    [
        ("BEGIN; UPDATE t SET a = 1 WHERE id = 1; ROLLBACK; BEGIN; SELECT 1; ABORT", "postgres"),
        ("BEGIN; CREATE TABLE x (a INT); ROLLBACK", "postgres"),  # PostgreSQL's DDL is transactional
        ("BEGIN; CREATE TABLE x (a INT); COMMIT", "mysql"),
        ("BEGIN; ROLLBACK AND NO CHAIN", "mysql"),
        ("BEGIN; COMMIT WORK AND NO CHAIN; START TRANSACTION; END TRANSACTION", "postgres"),
        ("SET @autocommit = 1; SET @note = 'autocommit'", "mysql"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, NOT DEFERRABLE; COMMIT", "postgres"),
        ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY; COMMIT", "mysql"),
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", "clickhouse"),
    ],
)
def test_accepted_transaction_statements(script: str, dialect: str) -> None:
    assert check_script(split_sql(script, dialect), dialect, allow_dangerous=False) == []
