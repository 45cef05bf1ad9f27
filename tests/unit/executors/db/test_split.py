"""Statement splitting over a corpus of scripts that trip naive splitters, with each dialect's own rules."""

from __future__ import annotations

import pytest

from executors.db.split import SplitError, split_sql

CORPUS: list[tuple[str, str, str, list[str]]] = [
    ("semicolons in strings", "mysql", "SELECT 'a;b'; SELECT \"x;y\"; SELECT `c;d`",
     ["SELECT 'a;b'", 'SELECT "x;y"', "SELECT `c;d`"]),
    ("doubled quotes", "mysql", "INSERT INTO t VALUES ('it''s; fine'); SELECT 1",
     ["INSERT INTO t VALUES ('it''s; fine')", "SELECT 1"]),
    ("mysql backslash escape", "mysql", r"INSERT INTO t VALUES ('a\';b'); SELECT 2",
     [r"INSERT INTO t VALUES ('a\';b')", "SELECT 2"]),
    ("comments stay with their statement", "mysql",
     "SELECT 1; -- not; a statement\nSELECT 2; # mysql; comment\nSELECT 3",
     ["SELECT 1", "-- not; a statement\nSELECT 2", "# mysql; comment\nSELECT 3"]),
    ("mysql double minus is arithmetic", "mysql",
     "UPDATE s SET stock = stock--1 WHERE id = 1; DELETE FROM s WHERE id = 2",
     ["UPDATE s SET stock = stock--1 WHERE id = 1", "DELETE FROM s WHERE id = 2"]),
    ("mysql executable comments are code", "mysql", "/*!40014 SET @OLD=@@FOREIGN_KEY_CHECKS */;\nSELECT 1",
     ["/*!40014 SET @OLD=@@FOREIGN_KEY_CHECKS */", "SELECT 1"]),
    ("block comments", "mysql", "/* one; two */ SELECT 1; SELECT /* ; */ 2;",
     ["/* one; two */ SELECT 1", "SELECT /* ; */ 2"]),
    ("postgres # is an operator", "postgres", "UPDATE acct SET flags = flags # 4 WHERE id = 3; SELECT 1",
     ["UPDATE acct SET flags = flags # 4 WHERE id = 3", "SELECT 1"]),
    ("postgres backslash ends nothing", "postgres", r"SELECT 'C:\'; DELETE FROM p WHERE id = 1",
     [r"SELECT 'C:\'", "DELETE FROM p WHERE id = 1"]),
    ("postgres E-strings", "postgres", r"SELECT E'\';'; SELECT 3", [r"SELECT E'\';'", "SELECT 3"]),
    ("dollar-quoted body", "postgres",
     "CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql; SELECT f()",
     ["CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql", "SELECT f()"]),
    ("tagged dollar quotes", "postgres", "DO $body$ BEGIN RAISE NOTICE 'x;y'; END $body$; SELECT 1",
     ["DO $body$ BEGIN RAISE NOTICE 'x;y'; END $body$", "SELECT 1"]),
    ("BEGIN ATOMIC body", "postgres",
     "CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT g()",
     ["CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", "SELECT g()"]),
    ("procedure body with nested blocks", "mysql",
     "CREATE DEFINER=`root`@`%` PROCEDURE p() BEGIN DECLARE x INT; IF x THEN SELECT CASE WHEN 1 THEN 2 END; "
     "END IF; WHILE x DO SET x = 1; END WHILE; END; CALL p()",
     ["CREATE DEFINER=`root`@`%` PROCEDURE p() BEGIN DECLARE x INT; IF x THEN SELECT CASE WHEN 1 THEN 2 END; "
      "END IF; WHILE x DO SET x = 1; END WHILE; END", "CALL p()"]),
    ("transaction BEGIN is a statement", "mysql", "BEGIN; UPDATE t SET a = 1; COMMIT",
     ["BEGIN", "UPDATE t SET a = 1", "COMMIT"]),
    ("DELIMITER directives", "mysql",
     "DELIMITER //\nCREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.url = 'http://x'; END//\n"
     "DELIMITER ;\nINSERT INTO t VALUES (1);",
     ["CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.url = 'http://x'; END",
      "INSERT INTO t VALUES (1)"]),
    ("blank and comment-only pieces", "mysql", "\n;;  -- just a comment\n;SELECT 1;\n/* end */", ["SELECT 1"]),
    ("no final semicolon", "postgres", "SELECT 1;\nSELECT 2", ["SELECT 1", "SELECT 2"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "dialect", "script", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus(name: str, dialect: str, script: str, expected: list[str]) -> None:
    assert [s.sql for s in split_sql(script, dialect)] == expected


def test_an_unterminated_string_is_an_error_not_a_guess() -> None:
    with pytest.raises(SplitError, match="cannot split the script"):
        split_sql("SELECT 'open; SELECT 2", "postgres")


@pytest.mark.parametrize(
    ("sql", "kind", "verb"),
    [
        ("CREATE TABLE t (a int)", "ddl", "CREATE TABLE"),
        ("create or replace view v as select 1", "ddl", "CREATE VIEW"),
        ("ALTER TABLE t ADD b int", "ddl", "ALTER TABLE"),
        ("TRUNCATE t", "ddl", "TRUNCATE"),
        ("LOCK TABLES t WRITE", "ddl", "LOCK"),
        ("CHECK TABLE t", "ddl", "CHECK"),
        ("INSERT INTO t VALUES (1)", "dml", "INSERT"),
        ("WITH x AS (SELECT 1) DELETE FROM t WHERE a IN (SELECT * FROM x)", "dml", "DELETE"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "query", "SELECT"),
        ("SHOW TABLES", "query", "SHOW"),
        ("START TRANSACTION", "tx", "START TRANSACTION"),
        ("SET autocommit = 1", "tx", "SET AUTOCOMMIT"),
        ("SET NAMES utf8mb4", "other", "SET"),
    ],
)
def test_kinds(sql: str, kind: str, verb: str) -> None:
    (stmt,) = split_sql(sql, "mysql")
    assert (stmt.kind, stmt.verb) == (kind, verb)


@pytest.mark.parametrize("type_name", ["mysql", "doris", "postgres", "clickhouse"])
def test_each_sql_type_names_a_sqlglot_dialect(type_name: str) -> None:
    from sqlglot.dialects import Dialect

    from executors.db.sql import SqlExecutor
    from executors.registry import get_executor

    executor = get_executor(type_name)
    assert isinstance(executor, SqlExecutor)
    Dialect.get_or_raise(executor.dialect)
    assert executor.driver_modules([])[0] == f"sqlglot.dialects.{executor.dialect}"


def test_a_type_splits_by_its_dialect_not_its_name() -> None:
    from executors.db.mysql import MySqlExecutor

    class TiDbExecutor(MySqlExecutor):
        """A type whose name sqlglot does not know, speaking MySQL."""

        type = "tidb"

    assert TiDbExecutor().driver_modules([])[0] == "sqlglot.dialects.mysql"
