"""`mysql` through goInception. The live test needs a goInception server: TIANGONG_TEST_GOINCEPTION names
it (`host:port` or `mysql://user:pw@host:port`), configured to reach the machine's MariaDB; none can be
installed here, so it is skipped without one. The header and the mapping of goInception's answer are
checked on their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from executors.db.goinception import _header, _result, parse_url
from executors.db.params import Target
from tests.integration.db.conftest import MariaDb
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
