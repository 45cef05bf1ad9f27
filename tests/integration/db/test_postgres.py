"""`postgres` against the machine's real PostgreSQL: batches, rollback SQL, cancel requests, sources."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

from tests.integration.db.conftest import PASSWORD, PgDb
from tests.integration.db.test_mysql import INTERRUPTED_WITHIN_SECONDS, cancel_when_running
from tests.unit.executors.harness import Harness, make_task, run_task
from wire.tasks import TaskStatus

ITEMS = "CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, qty INT, tags JSONB)"


def postgres(command: str, db: PgDb, file_id: str = "", **params: Any) -> Any:
    params.setdefault("target", db.target())
    return make_task(command, type="postgres", file_id=file_id, **params)


def test_ddl_dml_select_and_a_dollar_quoted_function(pg: PgDb, tmp_path: Path) -> None:
    script = f"""
        {ITEMS};
        CREATE FUNCTION bump(n int) RETURNS int LANGUAGE plpgsql AS $body$
        BEGIN
          UPDATE items SET qty = qty + n; -- a semicolon inside the body
          RETURN n;
        END;
        $body$;
        INSERT INTO items (name, qty) VALUES ('a;b', 1), ('c', 2);
        SELECT bump(10);
        SELECT name, qty FROM items ORDER BY id;
    """
    out, ctx = run_task(postgres(script, pg), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert [e["kind"] for e in out.data] == ["ddl", "ddl", "dml", "query", "query"]
    assert out.data[2]["affected_rows"] == 2
    assert out.data[4]["columns"] == ["name", "qty"] and out.data[4]["rows"] == [["a;b", 11], ["c", 12]]
    assert 'Rollback SQL: DROP TABLE IF EXISTS "items";' in out.result
    assert any(
        line.startswith("[3/5] INSERT INTO items (name, qty) VALUES ('a;b', 1), ('c', 2): affected 2 rows in ")
        for _, line in ctx.lines
    )
    assert PASSWORD not in out.result + out.error + repr(ctx.lines)


def test_failure_rolls_back_only_its_batch(pg: PgDb, tmp_path: Path) -> None:
    pg.query(ITEMS)
    script = "".join(f"INSERT INTO items (name) VALUES ('{n}');" for n in ["a", "b", "c", "d", "c", "e"])
    out, ctx = run_task(postgres(script, pg, exec_options={"trans_batch_size": 3}), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error.startswith('statement 5 failed: duplicate key value violates unique constraint "items_name_key"')
    assert [e["stage"] for e in out.data] == ["EXECUTED"] * 3 + ["ROLLED_BACK", "FAILED"]
    assert pg.query("SELECT name FROM items ORDER BY name") == [("a",), ("b",), ("c",)]
    assert "rolled back batch 2 (statements 4-5)" in [line for _, line in ctx.lines]


def test_rollback_sql_restores_the_data(pg: PgDb, tmp_path: Path) -> None:
    pg.query(ITEMS)
    pg.query(
        """INSERT INTO items (name, qty, tags) VALUES ('a', 1, '{"k": [1, "x"]}'), ('b', NULL, NULL), ('c', 3, '[]')"""
    )
    before = pg.query("SELECT * FROM items ORDER BY id")
    script = """
        UPDATE items SET qty = 0, tags = '{}' WHERE qty IS NULL OR qty > 2;
        DELETE FROM items WHERE name = 'a';
        INSERT INTO items (name) SELECT 'copy-' || name FROM items;
        INSERT INTO items (id, name) VALUES (50, 'fifty');
    """
    out, _ = run_task(postgres(script, pg), tmp_path)
    assert out.status is TaskStatus.success, out.error
    update, delete, insert_select, insert_values = out.data
    assert update["affected_rows"] == 2 and delete["affected_rows"] == 1
    assert insert_select["affected_rows"] == 2 and len(insert_select["rollback_sql"]) == 2
    assert insert_values["rollback_sql"] == ['DELETE FROM "items" WHERE "id" = 50;']
    for entry in reversed(out.data):
        for sql in entry["rollback_sql"]:
            pg.query(sql)
    assert pg.query("SELECT * FROM items ORDER BY id") == before


def _running(db: PgDb, fragment: str) -> bool:
    """Whether the agent's statement is running on the server. A query read through a server-side cursor
    shows as its FETCH in pg_stat_activity, so an active FETCH of ours counts as well."""
    rows = db.query(
        "SELECT query, application_name FROM pg_stat_activity WHERE state = 'active' AND datname = current_database()"
    )
    return any(
        (fragment in q and "pg_stat_activity" not in q) or (app == "tiangong" and q.startswith("FETCH "))
        for q, app in rows
    )


def test_timeout_cancels_the_statement_on_the_server(pg: PgDb, tmp_path: Path) -> None:
    started = time.monotonic()
    out, _ = run_task(postgres("SELECT pg_sleep(30)", pg, exec_options={"timeout_ms": 1000}), tmp_path)
    assert time.monotonic() - started < INTERRUPTED_WITHIN_SECONDS  # the server canceled it; nothing abandoned
    assert out.status is TaskStatus.timeout
    assert out.error == "statement 1 interrupted (timeout)"
    assert not _running(pg, "pg_sleep(30)")


def test_cancel_cancels_the_statement_on_the_server(pg: PgDb, tmp_path: Path) -> None:
    pg.query(ITEMS)
    script = "INSERT INTO items (name) VALUES ('kept-back'); SELECT pg_sleep(30)"
    setup = cancel_when_running(lambda: _running(pg, "pg_sleep(30)"))
    out, _ = run_task(postgres(script, pg), tmp_path, setup=setup)
    assert out.status is TaskStatus.canceled
    assert not _running(pg, "pg_sleep(30)")
    assert pg.query("SELECT count(*) FROM items") == [(0,)]  # the open batch was rolled back


def test_zip_and_two_databases_at_once(pg: PgDb, tmp_path: Path, request: Any) -> None:
    other: PgDb = request.getfixturevalue("pg_second")
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/001_items.sql", f"{ITEMS};\nINSERT INTO items (name) VALUES ('z');\n")

    def files(ctx: Harness) -> None:
        ctx.files["file-9"] = archive

    targets = [pg.target(), other.target()]
    out, _ = run_task(
        postgres("", pg, file_id="file-9", target=None, targets=targets, exec_options={"concurrency": 2}),
        tmp_path,
        setup=files,
    )
    assert out.status is TaskStatus.success, out.error
    assert [d["status"] for d in out.data] == ["success", "success"]
    assert pg.query("SELECT name FROM items") == other.query("SELECT name FROM items") == [("z",)]


def test_unreachable_server_fails_fast_with_the_reason(tmp_path: Path) -> None:
    target = {"host": "127.0.0.1", "port": 1, "password": PASSWORD}
    out, _ = run_task(make_task("SELECT 1", type="postgres", target=target), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error.startswith("cannot connect to 127.0.0.1:1/postgres: connection failed")
    assert PASSWORD not in out.error


def test_postgres_lexing_runs_exactly_what_was_written(pg: PgDb, tmp_path: Path) -> None:
    pg.query("CREATE TABLE acct (id INT PRIMARY KEY, flags INT, active BOOL, path TEXT)")
    pg.query("INSERT INTO acct VALUES (1, 1, true, ''), (3, 1, true, '')")
    script = (
        r"UPDATE acct SET active = false, flags = flags # 4 WHERE id = 3; UPDATE acct SET path = 'C:\' WHERE id = 1"
    )
    out, _ = run_task(postgres(script, pg), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert pg.query("SELECT id, flags, active, path FROM acct ORDER BY id") == [(1, 1, True, "C:\\"), (3, 5, False, "")]


def test_session_state_does_not_reach_the_next_task(pg: PgDb, tmp_path: Path) -> None:
    pg.query("CREATE SCHEMA staging; CREATE TABLE t (id int); CREATE TABLE staging.t (id int)")
    out, _ = run_task(postgres("SET search_path TO staging; INSERT INTO t VALUES (1)", pg), tmp_path)
    assert out.status is TaskStatus.success, out.error
    out, _ = run_task(postgres("SHOW search_path; INSERT INTO t VALUES (2)", pg), tmp_path)
    assert out.data[0]["rows"] == [['"$user", public']]
    assert pg.query("SELECT id FROM public.t") == [(2,)] and pg.query("SELECT id FROM staging.t") == [(1,)]


def test_rollback_sql_keeps_every_type_exact(pg: PgDb, tmp_path: Path) -> None:
    pg.query("CREATE TABLE Odd (id INT PRIMARY KEY, tags TEXT[], doc JSONB, j JSON, d DATE, r INT4RANGE)")
    pg.query(
        """INSERT INTO Odd VALUES (1, '{a,"b c"}', '"scalar"', '{"b": 1,  "a": [1]}', 'infinity', '[1,5)'),"""
        """ (2, NULL, 'null', 'null', '2024-02-29', 'empty')"""
    )
    before = pg.query("SELECT id, tags, doc::text, j::text, d::text, r::text FROM Odd ORDER BY id")
    script = (
        "UPDATE odd SET tags = '{}', doc = '1', j = '[]', d = 'today', r = NULL;"
        "WITH two AS (SELECT 2 AS id) DELETE FROM Odd WHERE id IN (SELECT id FROM two)"
    )
    out, _ = run_task(postgres(script, pg, exec_options={"allow_dangerous": True}), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert out.data[0]["rollback_sql"][0].startswith('UPDATE "odd" SET "tags" = ')
    for entry in reversed(out.data):
        for sql in entry["rollback_sql"]:
            pg.query(sql)
    assert pg.query("SELECT id, tags, doc::text, j::text, d::text, r::text FROM Odd ORDER BY id") == before


def test_statements_that_refuse_a_transaction_block_run(pg: PgDb, tmp_path: Path) -> None:
    pg.query(ITEMS)
    script = "INSERT INTO items (name) VALUES ('x'); CREATE INDEX CONCURRENTLY items_qty ON items (qty); VACUUM items"
    out, _ = run_task(postgres(script, pg), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert pg.query("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_qty'") == [(1,)]


def test_a_sql_file_and_its_create_table_rollback(pg: PgDb, tmp_path: Path) -> None:
    """A plain `.sql` file_id; the CREATE TABLE's rollback SQL, run, drops the table again."""
    script = tmp_path / "001_items.sql"
    script.write_text(f"{ITEMS};\nINSERT INTO items (name) VALUES ('from-file');\n")

    def files(ctx: Harness) -> None:
        ctx.files["file-3"] = script

    out, ctx = run_task(postgres("SELECT 'command is ignored'", pg, file_id="file-3"), tmp_path, setup=files)
    assert out.status is TaskStatus.success, out.error
    assert ctx.lines[0][1].startswith("2 statements from file-3 on ")
    assert pg.query("SELECT name FROM items") == [("from-file",)]
    create, insert = out.data
    assert create["rollback_sql"] == ['DROP TABLE IF EXISTS "items";']
    for entry in (insert, create):
        for sql in entry["rollback_sql"]:
            pg.query(sql)
    assert pg.query("SELECT to_regclass('items') IS NULL") == [(True,)]
