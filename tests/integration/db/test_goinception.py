"""`mysql` through goInception. The live test needs a goInception server: TIANGONG_TEST_GOINCEPTION names
it (`host:port` or `mysql://user:pw@host:port`), configured to reach the machine's MariaDB; none can be
installed here, so it is skipped without one. The header and the mapping of goInception's answer are
checked on their own; reading rollback SQL from goInception's backup tables and the KILL of a running
script are checked against the machine's MariaDB, with goInception itself not running."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executors.db.base import TargetRun
from executors.db.goinception import _entries, _header, _result, _rollback, _Session, parse_url
from executors.db.goinception_backup import INFO_TABLE
from executors.db.params import Target, parse_params
from tests.integration.db.conftest import MARIADB, MariaDb
from tests.servers import free_port
from tests.unit.executors.harness import Harness, make_task, run_task
from wire.tasks import TaskStatus

TARGET = Target("mysql", "db1", 3306, "deploy", "pw", "shop", "db1:3306/shop")


def test_header_names_the_server_and_the_options() -> None:
    assert _header(TARGET, True, True, 200, 0) == (
        "/*--host=db1;--port=3306;--user=deploy;--password=pw;--execute=1;--backup=1;--trans=200;*/"
    )
    assert parse_url("mysql://gi:secret@10.0.0.5:4001") == {
        "host": "10.0.0.5",
        "port": 4001,
        "user": "gi",
        "password": "secret",
    }
    assert parse_url("gi.internal")["port"] == 4000


def test_check_only_header_reviews_without_executing() -> None:
    assert _header(TARGET, False, True, 200, 500) == "/*--host=db1;--port=3306;--user=deploy;--password=pw;--check=1;*/"


def test_answer_rows_become_entries_and_an_error_fails_the_task() -> None:
    columns = [
        "order_id",
        "stage",
        "error_level",
        "stage_status",
        "error_message",
        "sql",
        "affected_rows",
        "sequence",
        "backup_dbname",
        "execute_time",
        "sqlsha1",
        "backup_time",
    ]
    rows = [
        (1, "EXECUTED", 0, "Execute Successfully", None, "use shop", 0, "0_0_0", "None", "0", "", "0"),
        (
            2,
            "EXECUTED",
            0,
            "Execute Successfully\nBackup Successfully",
            None,
            "update t set a=1",
            3,
            "1_2_3",
            "db1_3306_shop",
            "0.012",
            "",
            "0.003",
        ),
        (
            3,
            "CHECKED",
            2,
            "Execute failed",
            "Table 'shop.nope' doesn't exist.",
            "delete from nope",
            0,
            "",
            "",
            "0",
            "",
            "0",
        ),
    ]

    class Run:
        def log(self, message: str, level: object = None) -> None:
            self.lines = [*getattr(self, "lines", []), message]

    res = _result(TARGET, Run(), columns, rows, 0.02)  # type: ignore[arg-type]
    assert res.status is TaskStatus.failed
    assert res.error == "statement 3: Table 'shop.nope' doesn't exist."
    assert res.entries[1]["backup_db"] == "db1_3306_shop" and res.entries[1]["affected_rows"] == 3
    assert "Backup DB: db1_3306_shop\nSequence: 1_2_3\nSQL: update t set a=1" in res.text


@pytest.mark.skipif(not os.environ.get("TIANGONG_TEST_GOINCEPTION"), reason="TIANGONG_TEST_GOINCEPTION not set")
def test_live_goinception_executes_and_backs_up(mariadb: MariaDb, tmp_path: Path) -> None:
    def config(ctx: Harness) -> None:
        ctx.config = {"goinception_url": os.environ["TIANGONG_TEST_GOINCEPTION"]}

    script = "CREATE TABLE t (id INT PRIMARY KEY, v INT) COMMENT 'x'; INSERT INTO t VALUES (1, 1);"
    out, _ = run_task(make_task(script, type="mysql", target=mariadb.target()), tmp_path, setup=config)
    assert out.status is TaskStatus.success, out.error
    assert [e["stage"] for e in out.data][-1] == "EXECUTED"
    assert mariadb.query("SELECT id, v FROM t") == [(1, 1)]


COLUMNS = [
    "order_id", "stage", "error_level", "stage_status", "error_message", "sql", "affected_rows", "sequence",
    "backup_dbname", "execute_time", "sqlsha1", "backup_time",
]  # fmt: skip


class _Log:
    def log(self, message: str, level: object = None) -> None:
        return None


def test_check_only_answer_reports_the_review_and_no_backup() -> None:
    rows = [
        (1, "CHECKED", 0, "Audit Completed", "None", "use shop", 0, "0_0_00000000", "None", "0", "", "0"),
        (2, "CHECKED", 1, "Audit Completed", "Set engine to innodb for table 't'.", "create table t (id int)",
         0, "0_0_00000001", "None", "0", "", "0"),
    ]  # fmt: skip
    res = _result(TARGET, _Log(), COLUMNS, rows, 0.01, execute=False)  # type: ignore[arg-type]
    assert res.status is TaskStatus.success and res.error == ""
    assert res.entries[1]["warning"] == "Set engine to innodb for table 't'." and res.entries[0]["warning"] == ""
    assert "Error Level: WARNING (Set engine to innodb for table 't'.)" in res.text
    assert "Backup DB" not in res.text and "check_only: nothing executed" in res.text


def test_check_only_without_goinception_is_the_agents_own_review(mariadb: MariaDb, tmp_path: Path) -> None:
    """No goinception_url: the SQL types' own review (tests/integration/db/test_guards.py) runs instead."""
    with pytest.raises(ValueError, match=r"exec_options\.check_only: only the SQL types"):
        parse_params({"target": {"host": "h"}, "exec_options": {"check_only": True}}, "elasticsearch")
    task = make_task(
        "CREATE TABLE t (id INT PRIMARY KEY)", type="mysql", target=mariadb.target(), exec_options={"check_only": True}
    )
    out, _ = run_task(task, tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert [e["stage"] for e in out.data] == ["CHECKED"]
    assert mariadb.query("SHOW TABLES") == []  # a review asked for; nothing ran


def test_goinception_path_refuses_a_dangerous_script_before_sending_it(tmp_path: Path) -> None:
    """The guard runs before goInception is even contacted (nothing listens on its port here)."""
    task = make_task(type="mysql", file_id="file-1", target={"host": "db1"})
    script = tmp_path / "s.sql"
    script.write_text("INSERT INTO t VALUES (1);\nDELETE FROM t")
    port = free_port()

    def setup(h: Harness) -> None:
        h.files["file-1"] = script
        h.config = {"goinception_url": f"127.0.0.1:{port}"}

    out, _ = run_task(task, tmp_path, setup=setup)
    assert out.status == TaskStatus.failed
    assert out.error.startswith("file-1: statement 2 (DELETE): DELETE without WHERE changes every row")


@pytest.fixture
def backup_db(mariadb: MariaDb) -> Iterator[str]:
    """A backup database laid out as goInception writes one (its docs' "Backup Record Format"): named
    `IP_PORT_dbname`, with `$_$Inception_backup_information$_$` and a rollback table per changed table."""
    import pymysql

    name = f"127_0_0_1_3306_{mariadb.name}"
    conn = pymysql.connect(**MARIADB, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(
            f"CREATE TABLE `{name}`.`{INFO_TABLE}` (opid_time VARCHAR(50) PRIMARY KEY, start_binlog_file "
            "VARCHAR(512), start_binlog_pos INT, end_binlog_file VARCHAR(512), end_binlog_pos INT, sql_statement "
            "TEXT, host VARCHAR(64), dbname VARCHAR(64), tablename VARCHAR(64), port INT, time TIMESTAMP, type "
            "VARCHAR(20))"
        )
        cur.execute(
            f"CREATE TABLE `{name}`.`t` (id BIGINT AUTO_INCREMENT PRIMARY KEY, rollback_statement MEDIUMTEXT, "
            "opid_time VARCHAR(50))"
        )
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def _run(config: dict[str, Any], tmp_path: Path) -> tuple[TargetRun, Harness]:
    loop = asyncio.get_running_loop()
    ctx = Harness(workdir=tmp_path, deadline=loop.time() + 30, config=config)
    task = make_task("", type="mysql", target={"host": "db1"})
    return TargetRun(task, parse_params(task.params, "mysql"), ctx, ctx.deadline, ""), ctx


def test_rollback_sql_is_read_from_the_backup_tables_and_restores_the_data(
    mariadb: MariaDb, backup_db: str, tmp_path: Path
) -> None:
    """goInception is not running: its answer rows are given, and the backup tables are laid out and filled
    as goInception writes them after `UPDATE t SET v = v * 10`, which the test runs on MariaDB itself."""
    mariadb.query("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    mariadb.query("INSERT INTO t VALUES (1, 1), (2, 2)")
    mariadb.query("UPDATE t SET v = v * 10")
    opid = "1700000000_42_00000002"
    undo = [f"UPDATE `{mariadb.name}`.`t` SET `id`={i}, `v`={i} WHERE `id`={i};" for i in (1, 2)]
    mariadb.query(
        f"INSERT INTO `{backup_db}`.`{INFO_TABLE}` (opid_time, sql_statement, host, dbname, tablename, port, type) "
        "VALUES (%s, 'UPDATE t SET v = v * 10', '127.0.0.1', %s, 't', 3306, 'UPDATE')",
        opid,
        mariadb.name,
    )
    for sql in undo:
        mariadb.query(f"INSERT INTO `{backup_db}`.`t` (rollback_statement, opid_time) VALUES (%s, %s)", sql, opid)
    rows = [
        (1, "RERUN", 0, "Execute Successfully", "None", f"use {mariadb.name}", 0, "'1700000000_42_00000001'",
         "None", "0", "", "0"),
        (2, "EXECUTED", 0, "Execute Successfully\nBackup successfully", "None", "UPDATE t SET v = v * 10", 2,
         f"'{opid}'", backup_db, "0.004", "", "0.010"),
    ]  # fmt: skip
    backup = {"goinception_backup": {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}}

    async def main() -> Any:
        run, _ = _run(backup, tmp_path)
        rollback, note = await _rollback(run, _entries(COLUMNS, rows), True)
        assert note == ""
        return _result(TARGET, run, COLUMNS, rows, 0.02, rollback=rollback)

    res = asyncio.run(main())
    assert res.status is TaskStatus.success
    assert res.entries[1]["rollback_sql"] == undo and "rollback_sql" not in res.entries[0]
    assert "Rollback SQL: " + "\n".join(undo) + "\nSQL: UPDATE t SET v = v * 10" in res.text
    assert res.text.endswith("Rollback script (newest first):\n" + "\n".join(undo) + "\n")
    for sql in res.entries[1]["rollback_sql"]:
        mariadb.query(sql)
    assert mariadb.query("SELECT id, v FROM t ORDER BY id") == [(1, 1), (2, 2)]


def test_an_unreachable_backup_server_costs_only_the_rollback_text(tmp_path: Path) -> None:
    rows = [(1, "EXECUTED", 0, "Execute Successfully", "None", "DELETE FROM t", 3, "'1_2_3'", "db1_3306_shop",
             "0.001", "", "0")]  # fmt: skip
    port = free_port()

    async def main() -> Any:
        run, _ = _run({"goinception_backup": {"host": "127.0.0.1", "port": port, "user": "gi"}}, tmp_path)
        rollback, note = await _rollback(run, _entries(COLUMNS, rows), True)
        return _result(TARGET, run, COLUMNS, rows, 0.01, rollback=rollback, rollback_note=note)

    res = asyncio.run(main())
    assert res.status is TaskStatus.success
    assert res.entries[0]["rollback_note"].startswith(f"not read from goInception's backup server 127.0.0.1:{port}")
    assert "Rollback SQL: not read from goInception's backup server" in res.text


def test_kill_names_the_running_connection_on_a_second_one(mariadb_account: str) -> None:
    """MariaDB stands in for goInception as the MySQL-protocol peer: a second connection's `kill <id>`
    names the connection running the script and the server ends it. goInception's own KILL (stop after the
    current statement, then answer with the rows so far) is not shown here."""
    session = _Session({**MARIADB})
    failed: list[BaseException] = []

    def work() -> None:
        try:
            session.run("SELECT SLEEP(30)")
        except Exception as exc:
            failed.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    for _ in range(100):  # until it runs
        if session.conn is not None and session.conn.open:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    started = time.monotonic()
    session.kill()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert failed and session.answer is None, "the script ran to its end instead of being killed"
