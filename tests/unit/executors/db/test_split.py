"""Statement splitting over a corpus of scripts that trip naive splitters."""

from __future__ import annotations

import pytest

from executors.db.split import split_sql

CORPUS: list[tuple[str, str, list[str]]] = [
    (
        "semicolons in strings",
        "SELECT 'a;b'; SELECT \"x;y\"; SELECT `c;d`",
        ["SELECT 'a;b'", 'SELECT "x;y"', "SELECT `c;d`"],
    ),
    (
        "doubled quotes",
        "INSERT INTO t VALUES ('it''s; fine'); SELECT 1",
        ["INSERT INTO t VALUES ('it''s; fine')", "SELECT 1"],
    ),
    ("backslash escape", r"INSERT INTO t VALUES ('a\';b'); SELECT 2", [r"INSERT INTO t VALUES ('a\';b')", "SELECT 2"]),
    (
        "line comments",
        "SELECT 1; -- not; a statement\nSELECT 2; # mysql; comment\nSELECT 3",
        ["SELECT 1", "SELECT 2", "SELECT 3"],
    ),
    ("block comments", "/* one; two */ SELECT 1; SELECT /* ; */ 2;", ["SELECT 1", "SELECT /* ; */ 2"]),
    (
        "dollar-quoted body",
        "CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql; SELECT f()",
        ["CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql", "SELECT f()"],
    ),
    (
        "tagged dollar quotes",
        "DO $body$ BEGIN RAISE NOTICE 'x;y'; END $body$; SELECT 1",
        ["DO $body$ BEGIN RAISE NOTICE 'x;y'; END $body$", "SELECT 1"],
    ),
    (
        "procedure body",
        "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END; CALL p()",
        ["CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", "CALL p()"],
    ),
    (
        "DELIMITER directives",
        "DELIMITER $$\nCREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END$$\n"
        "DELIMITER ;\nINSERT INTO t VALUES (1);",
        ["CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END", "INSERT INTO t VALUES (1)"],
    ),
    ("blank and comment-only pieces", "\n;;  -- just a comment\n;SELECT 1;\n/* end */", ["SELECT 1"]),
    ("no final semicolon", "SELECT 1;\nSELECT 2", ["SELECT 1", "SELECT 2"]),
    ("E-strings", r"SELECT E'\';'; SELECT 3", [r"SELECT E'\';'", "SELECT 3"]),
]


@pytest.mark.parametrize(("name", "script", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus(name: str, script: str, expected: list[str]) -> None:
    assert [s.sql for s in split_sql(script)] == expected


@pytest.mark.parametrize(
    ("sql", "kind", "verb"),
    [
        ("CREATE TABLE t (a int)", "ddl", "CREATE TABLE"),
        ("create or replace view v as select 1", "ddl", "CREATE VIEW"),
        ("ALTER TABLE t ADD b int", "ddl", "ALTER TABLE"),
        ("TRUNCATE t", "ddl", "TRUNCATE"),
        ("INSERT INTO t VALUES (1)", "dml", "INSERT"),
        ("WITH x AS (SELECT 1) DELETE FROM t WHERE a IN (SELECT * FROM x)", "dml", "DELETE"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "query", "SELECT"),
        ("SHOW TABLES", "query", "SHOW"),
        ("START TRANSACTION", "tx", "START TRANSACTION"),
        ("SET NAMES utf8mb4", "other", "SET"),
    ],
)
def test_kinds(sql: str, kind: str, verb: str) -> None:
    (stmt,) = split_sql(sql)
    assert (stmt.kind, stmt.verb) == (kind, verb)
