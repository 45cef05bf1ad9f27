"""A script's own transaction statements against real PostgreSQL (and MariaDB): honoured or refused, and
the result never says committed for what the server undid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloud.services.errors import BadRequest
from cloud.services.tasks import validate_request
from tests.integration.db.conftest import MariaDb, PgDb
from tests.unit.executors.harness import make_task, run_task
from wire.tasks import TaskRequest, TaskStatus


def postgres(command: str, db: PgDb, **params: Any) -> Any:
    params.setdefault("target", db.target())
    return make_task(command, type="postgres", **params)


def _table(pg: PgDb) -> None:
    pg.query("CREATE TABLE acc (id INT PRIMARY KEY, n INT)")
    pg.query("INSERT INTO acc VALUES (1, 10), (2, 20)")


def test_begin_read_only_is_enforced_by_the_server(pg: PgDb, tmp_path: Path) -> None:
    _table(pg)
    out, _ = run_task(postgres("BEGIN READ ONLY;\nUPDATE acc SET n = 0 WHERE id = 1;\nCOMMIT", pg), tmp_path)
    assert out.status == TaskStatus.failed
    assert "cannot execute UPDATE in a read-only transaction" in out.error
    assert [e["stage"] for e in out.data] == ["FAILED"]
    assert pg.query("SELECT n FROM acc WHERE id = 1") == [(10,)]


@pytest.mark.parametrize(
    ("begin", "isolation", "read_only"),
    [
        ("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY", "serializable", "on"),
        ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ", "repeatable read", "off"),
        ("BEGIN TRANSACTION READ ONLY", "read committed", "on"),
        ("BEGIN", "read committed", "off"),
    ],
)
def test_isolation_and_access_modes_reach_the_server(
    begin: str, isolation: str, read_only: str, pg: PgDb, tmp_path: Path
) -> None:
    settings = "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')"
    script = f"{begin};\n{settings};\nEND"
    out, _ = run_task(postgres(script, pg), tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert out.data[0]["rows"] == [[isolation, read_only]]


def test_modes_end_with_their_block(pg: PgDb, tmp_path: Path) -> None:
    """The statement after COMMIT runs in a transaction of its own, with the server's defaults."""
    _table(pg)
    script = "BEGIN READ ONLY;\nCOMMIT;\nUPDATE acc SET n = 11 WHERE id = 1"
    out, _ = run_task(postgres(script, pg), tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert pg.query("SELECT n FROM acc WHERE id = 1") == [(11,)]


@pytest.mark.parametrize("verb", ["ROLLBACK", "ABORT", "ROLLBACK WORK"])
def test_the_scripts_rollback_is_reported_as_rolled_back(verb: str, pg: PgDb, tmp_path: Path) -> None:
    _table(pg)
    script = (
        "BEGIN;\nUPDATE acc SET n = 0 WHERE id = 1;\nDELETE FROM acc WHERE id = 2;\n"
        f"SELECT count(*) FROM acc;\n{verb};\nUPDATE acc SET n = 99 WHERE id = 2"
    )
    # trans_batch_size 1 would commit after each DML outside a block: inside one, nothing is cut.
    out, ctx = run_task(postgres(script, pg, exec_options={"trans_batch_size": 1}), tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert [e["stage"] for e in out.data] == ["ROLLED_BACK", "ROLLED_BACK", "EXECUTED", "EXECUTED"]
    assert [e.get("rolled_back_by_script", False) for e in out.data] == [True, True, True, False]
    assert "Status: Rolled Back (the script's ROLLBACK)" in out.result
    assert "Execute Successfully" not in out.result.split("Order ID: 4")[0]
    assert "Summary: 6 statements; 2 executed and committed; 2 rolled back by the script's ROLLBACK\n" in out.result
    # The rollback script holds only what stayed committed: the last UPDATE's undo.
    assert out.result.endswith(
        'Rollback script (newest first):\nUPDATE "acc" SET "n" = \'20\'::integer WHERE "id" = \'2\'::integer;\n'
    )
    assert any("rolled back batch 1 (statements 2-4) as statement 5 asks" in line for _, line in ctx.lines)
    # The server undid the block; the statement after it committed (id 2 still exists: the DELETE was undone).
    assert pg.query("SELECT id, n FROM acc ORDER BY id") == [(1, 10), (2, 99)]


def test_rollback_after_read_only_block(pg: PgDb, tmp_path: Path) -> None:
    _table(pg)
    out, _ = run_task(postgres("BEGIN READ ONLY;\nSELECT n FROM acc WHERE id = 1;\nROLLBACK", pg), tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert out.data[0]["rows"] == [[10]]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "UPDATE acc SET n = 1 WHERE id = 1;\nROLLBACK",
            "command: statement 2 (ROLLBACK): ROLLBACK outside a BEGIN ... block",
        ),
        ("BEGIN;\nSAVEPOINT a;\nCOMMIT", "command: statement 2: SAVEPOINT is not supported in a script"),
        ("BEGIN;\nROLLBACK TO SAVEPOINT a", "command: statement 2: ROLLBACK TO SAVEPOINT a is not"),
        ("BEGIN;\nBEGIN;\nCOMMIT", "command: statement 2 (BEGIN): BEGIN inside an open BEGIN ... COMMIT block"),
        ("BEGIN;\nVACUUM acc;\nCOMMIT", "command: statement 2 (VACUUM): cannot run inside a transaction block"),
    ],
)
def test_unsupported_transaction_statements_are_a_400(script: str, message: str) -> None:
    req = TaskRequest(type="postgres", command=script, params={"target": {"host": "db1"}})
    with pytest.raises(BadRequest) as err:
        validate_request(req)
    assert str(err.value).startswith(message)


def test_a_file_with_a_stray_rollback_is_refused_before_anything_runs(pg: PgDb, tmp_path: Path) -> None:
    _table(pg)
    script = tmp_path / "s.sql"
    script.write_text("UPDATE acc SET n = 0 WHERE id = 1;\nABORT")
    task = make_task(type="postgres", file_id="file-1", target=pg.target())
    out, _ = run_task(task, tmp_path, setup=lambda h: h.files.update({"file-1": script}))
    assert out.status == TaskStatus.failed
    assert out.error.startswith("file-1: statement 2 (ABORT): ROLLBACK outside a BEGIN ... block")
    assert out.data == [] and pg.query("SELECT n FROM acc WHERE id = 1") == [(10,)]


def test_an_unclosed_block_commits_at_the_end(pg: PgDb, tmp_path: Path) -> None:
    _table(pg)
    out, _ = run_task(postgres("BEGIN;\nUPDATE acc SET n = 5 WHERE id = 1", pg), tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert out.data[0]["stage"] == "EXECUTED" and pg.query("SELECT n FROM acc WHERE id = 1") == [(5,)]


def test_mariadb_start_transaction_read_only_and_rollback(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query("CREATE TABLE acc (id INT PRIMARY KEY, n INT)")
    mariadb.query("INSERT INTO acc VALUES (1, 10), (2, 20)")
    target = mariadb.target()
    script = "START TRANSACTION READ ONLY;\nUPDATE acc SET n = 0 WHERE id = 1;\nCOMMIT"
    out, _ = run_task(make_task(script, type="mysql", target=target), tmp_path)
    assert out.status == TaskStatus.failed and "(1792) Cannot execute statement in a READ ONLY transaction" in out.error
    assert mariadb.query("SELECT n FROM acc WHERE id = 1") == [(10,)]
    script = "BEGIN;\nUPDATE acc SET n = 0 WHERE id = 1;\nROLLBACK;\nUPDATE acc SET n = 21 WHERE id = 2"
    out, _ = run_task(make_task(script, type="mysql", target=target), tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert [e["stage"] for e in out.data] == ["ROLLED_BACK", "EXECUTED"]
    assert "Rollback SQL: UPDATE" not in out.result.split("Order ID: 4")[0]
    assert mariadb.query("SELECT id, n FROM acc ORDER BY id") == [(1, 10), (2, 21)]
