"""`mysql` and `doris` against the machine's real MariaDB: batches, rollback SQL, interrupts, sources."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from executors.db.params import DEFAULTS
from executors.registry import default_exec_timeout
from tests.e2e.harness import wait_for
from tests.integration.db.conftest import PASSWORD, MariaDb
from tests.unit.executors.harness import Harness, make_task, run_task
from wire.tasks import TaskRequest, TaskStatus

USERS = "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) NOT NULL UNIQUE, age INT)"


def mysql(command: str, db: MariaDb, file_id: str = "", **params: Any) -> Any:
    params.setdefault("target", db.target())
    return make_task(command, type="mysql", file_id=file_id, **params)


def assert_no_secret(out: Any, ctx: Harness) -> None:
    """The account's password shows nowhere a user can read."""
    assert PASSWORD not in out.result
    assert PASSWORD not in out.error
    assert PASSWORD not in repr(out.data)
    assert all(PASSWORD not in line for _, line in ctx.lines)


def test_ddl_dml_select_report_each_statement(mariadb: MariaDb, tmp_path: Path) -> None:
    script = f"""
        {USERS};
        INSERT INTO users (name, age) VALUES ('ann', 30), ('bob', 40), ('cy', 50);
        UPDATE users SET age = age + 1 WHERE age >= 40;  -- two rows
        SELECT id, name, age FROM users ORDER BY id;
    """
    out, ctx = run_task(mysql(script, mariadb, metadata={"env": "prod", "creator": "ann", "ticket": "T-7"}), tmp_path)
    assert out.status is TaskStatus.success, out.error
    _, insert, update, select = out.data
    assert [e["affected_rows"] for e in (insert, update)] == [3, 2]
    assert select["columns"] == ["id", "name", "age"]
    assert select["rows"] == [[1, "ann", 30], [2, "bob", 41], [3, "cy", 51]]
    assert all(e["stage"] == "EXECUTED" and e["error"] == "" for e in out.data)
    assert out.result.startswith("Env: prod\nCreator: ann\nTicket: T-7\n")
    assert "Order ID: 3\nStage: EXECUTED\nStatus: Execute Successfully\nAffected Rows: 2\n" in out.result
    assert "Rollback SQL: DROP TABLE IF EXISTS `users`;" in out.result
    lines = [line for _, line in ctx.lines]
    assert any(
        line.startswith("[3/4] UPDATE users SET age = age + 1 WHERE age >= 40: affected 2 rows in ") for line in lines
    )
    assert mariadb.query("SELECT name, age FROM users ORDER BY id") == [("ann", 30), ("bob", 41), ("cy", 51)]
    assert_no_secret(out, ctx)


def test_batches_commit_every_trans_batch_size_dml(mariadb: MariaDb, tmp_path: Path) -> None:
    inserts = "".join(f"INSERT INTO users (name) VALUES ('u{i}');" for i in range(5))
    out, ctx = run_task(mysql(f"{USERS}; {inserts}", mariadb, exec_options={"trans_batch_size": 2}), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert [e["batch"] for e in out.data] == [1, 2, 2, 3, 3, 4]
    commits = [line for _, line in ctx.lines if line.startswith("committed batch")]
    assert commits == [
        "committed batch 2 (statements 2-3)",
        "committed batch 3 (statements 4-5)",
        "committed batch 4 (statements 6-6)",
    ]


def test_failure_rolls_back_only_its_batch_and_stops(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query(USERS)
    script = """
        INSERT INTO users (name) VALUES ('a');
        INSERT INTO users (name) VALUES ('b');
        INSERT INTO users (name) VALUES ('c');
        INSERT INTO users (name) VALUES ('a');
        INSERT INTO users (name) VALUES ('never');
    """
    out, ctx = run_task(mysql(script, mariadb, exec_options={"trans_batch_size": 2}), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error.startswith("statement 4 failed: (1062) Duplicate entry 'a'")
    assert [e["stage"] for e in out.data] == ["EXECUTED", "EXECUTED", "ROLLED_BACK", "FAILED"]
    assert mariadb.query("SELECT name FROM users ORDER BY id") == [("a",), ("b",)]
    assert "Summary: 5 statements; 2 executed and committed; 1 rolled back; statement 4 failed" in out.result
    assert "statement 4 failed: (1062) Duplicate entry 'a' for key 'name'; 1 not run" in out.result
    assert "rolled back batch 2 (statements 3-4)" in [line for _, line in ctx.lines]


def test_rollback_sql_restores_the_data(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query(USERS)
    mariadb.query("INSERT INTO users (name, age) VALUES ('ann', 30), ('bob', NULL), ('cy', 50), ('dee', 60)")
    before = mariadb.query("SELECT * FROM users ORDER BY id")
    script = """
        UPDATE users SET age = 99, name = CONCAT(name, '!') WHERE age IS NULL OR age > 40;
        DELETE FROM users WHERE name = 'ann';
        INSERT INTO users (name, age) VALUES ('new1', 1), ('new2', 2);
        INSERT INTO users (id, name) VALUES (100, 'hundred');
        CREATE TABLE extra (k INT PRIMARY KEY);
        ALTER TABLE extra ADD COLUMN v INT;
    """
    out, _ = run_task(mysql(script, mariadb), tmp_path)
    assert out.status is TaskStatus.success, out.error
    update, delete, insert, insert_id, create, alter = out.data
    assert update["affected_rows"] == 3 and len(update["rollback_sql"]) == 3
    assert insert["rollback_sql"] == ["DELETE FROM `users` WHERE `id` = 5;", "DELETE FROM `users` WHERE `id` = 6;"]
    assert insert_id["rollback_sql"] == ["DELETE FROM `users` WHERE `id` = 100;"]
    assert create["rollback_sql"] == ["DROP TABLE IF EXISTS `extra`;"]
    assert alter["rollback_sql"] == [] and alter["rollback_note"] == "not reversible: ALTER TABLE"
    assert mariadb.query("SELECT * FROM users ORDER BY id") != before
    for entry in reversed([update, delete, insert, insert_id]):
        for sql in entry["rollback_sql"]:
            mariadb.query(sql)
    assert mariadb.query("SELECT * FROM users ORDER BY id") == before


def test_backup_off_and_tables_without_a_key_say_so(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query("CREATE TABLE logbook (msg TEXT)")
    script = "INSERT INTO logbook VALUES ('x'); DELETE FROM logbook"
    out, _ = run_task(mysql(script, mariadb, exec_options={"allow_dangerous": True}), tmp_path)
    assert out.status is TaskStatus.success
    assert [e["rollback_note"] for e in out.data] == ["cannot restore exactly: `logbook` has no primary key"] * 2
    out, _ = run_task(mysql("INSERT INTO logbook VALUES ('y')", mariadb, exec_options={"backup": False}), tmp_path)
    assert out.status is TaskStatus.success, out
    assert "rollback_sql" not in out.data[0] and "Rollback SQL" not in out.result


def test_max_rows_cuts_a_select_and_marks_it(mariadb: MariaDb, tmp_path: Path) -> None:
    out, _ = run_task(mysql("SELECT seq FROM seq_1_to_2500", mariadb, exec_options={"max_rows": 1000}), tmp_path)
    assert out.status is TaskStatus.success, out.error
    (entry,) = out.data
    assert len(entry["rows"]) == 1000 and entry["truncated"] is True
    assert "Rows: 1000 (first 1000; cut at max_rows)" in out.result


def _running(db: MariaDb, fragment: str) -> bool:
    """A statement of this test's account runs on the server (other workers' tests run SLEEP(30) too)."""
    rows = db.query("SELECT INFO FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND = 'Query'", db.user)
    return any(fragment in (info or "") for (info,) in rows)


INTERRUPTED_WITHIN_SECONDS = 8
"""Well under the 10 s a worker gets after an interrupt (blocking.INTERRUPT_GRACE_SECONDS): a run that ends
sooner was stopped by the server, not abandoned by the agent."""


@pytest.mark.parametrize("type_", ["mysql", "doris"])
def test_timeout_interrupts_the_statement_on_the_server(type_: str, mariadb: MariaDb, tmp_path: Path) -> None:
    """For doris, MariaDB stands in for Doris' MySQL-protocol front end."""
    task = make_task(
        "SELECT 1; SELECT SLEEP(30)", type=type_, target=mariadb.target(), exec_options={"timeout_ms": 1000}
    )
    started = time.monotonic()
    out, _ = run_task(task, tmp_path)
    assert time.monotonic() - started < INTERRUPTED_WITHIN_SECONDS
    assert out.status is TaskStatus.timeout
    assert out.error == "statement 2 interrupted (timeout)"
    assert [e["stage"] for e in out.data] == ["EXECUTED", "INTERRUPTED"]
    assert not _running(mariadb, "SLEEP(30)")


COLD_RUN = """
import json, sys
from pathlib import Path
from tests.unit.executors.harness import make_task, run_task

task = make_task(
    "SELECT 1; SELECT SLEEP(30)", type=sys.argv[1], target=json.loads(sys.argv[2]), exec_options={"timeout_ms": 1000}
)
out, _ = run_task(task, Path(sys.argv[3]))
print(json.dumps({"status": out.status.value, "error": out.error, "loaded": "pymysql" in sys.modules}))
"""


@pytest.mark.parametrize("type_", ["mysql", "doris"])
def test_a_cold_agent_imports_its_driver_outside_timeout_ms(type_: str, mariadb: MariaDb, tmp_path: Path) -> None:
    """In a fresh interpreter the first import of pymysql and sqlglot can take longer than a 1 s
    timeout_ms: that is the agent's time, so the statement still runs and is interrupted on the server."""
    root = Path(__file__).resolve().parents[3]
    args = [sys.executable, "-c", COLD_RUN, type_, json.dumps(mariadb.target()), str(tmp_path)]
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got == {"status": "timeout", "error": "statement 2 interrupted (timeout)", "loaded": True}
    assert not _running(mariadb, "SLEEP(30)")


def cancel_when_running(db_running: Any, canceled_at: list[float] | None = None) -> Any:
    """A setup that cancels the task as soon as its statement is seen running on the server (noting when
    in `canceled_at`)."""

    def setup(ctx: Harness) -> None:
        loop = asyncio.get_running_loop()

        def watch() -> None:
            end = time.monotonic() + 20
            while time.monotonic() < end and not db_running():
                time.sleep(0.05)
            if canceled_at is not None:
                canceled_at.append(time.monotonic())
            loop.call_soon_threadsafe(ctx.cancel_event.set)

        threading.Thread(target=watch, daemon=True).start()

    return setup


def test_cancel_interrupts_the_statement_on_the_server(mariadb: MariaDb, tmp_path: Path) -> None:
    setup = cancel_when_running(lambda: _running(mariadb, "SLEEP(30)"))
    out, _ = run_task(mysql("SELECT SLEEP(30)", mariadb), tmp_path, setup=setup)
    assert out.status is TaskStatus.canceled
    # The server clears a killed statement's processlist entry just after it answered: seconds, not the 30 s.
    wait_for(lambda: not _running(mariadb, "SLEEP(30)"), 5, "the statement to leave the server's processlist")


def test_sql_from_a_file_and_from_a_zip(mariadb: MariaDb, tmp_path: Path) -> None:
    sql = tmp_path / "up.sql"
    sql.write_text(f"{USERS};\nINSERT INTO users (name) VALUES ('from-file');\n")
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("README.txt", "not sql")
        zf.writestr("migrations/001.sql", "INSERT INTO users (name) VALUES ('first-sql');")
        zf.writestr("migrations/002.sql", "INSERT INTO users (name) VALUES ('named');")

    def files(ctx: Harness) -> None:
        ctx.files.update({"file-1": sql, "file-2": archive})

    out, ctx = run_task(mysql("SELECT 'command is ignored'", mariadb, file_id="file-1"), tmp_path, setup=files)
    assert out.status is TaskStatus.success, out.error
    assert ctx.lines[0][1].startswith("2 statements from file-1 on ")
    out, _ = run_task(mysql("", mariadb, file_id="file-2"), tmp_path, setup=files)
    assert out.status is TaskStatus.success, out.error
    out, _ = run_task(mysql("", mariadb, file_id="file-2", file_name="002.sql"), tmp_path, setup=files)
    assert out.status is TaskStatus.success, out.error
    assert mariadb.query("SELECT name FROM users ORDER BY id") == [("from-file",), ("first-sql",), ("named",)]
    out, _ = run_task(mysql("", mariadb, file_id="file-2", file_name="nope.sql"), tmp_path, setup=files)
    assert out.status is TaskStatus.failed and out.error == "params.file_name: 'nope.sql' is not in the zip"


def test_two_targets_at_once_each_with_its_result(mariadb: MariaDb, tmp_path: Path, request: Any) -> None:
    other = request.getfixturevalue("mariadb_second")
    targets = [mariadb.target(name="first"), other.target(name="second")]
    out, ctx = run_task(
        mysql(
            f"{USERS}; INSERT INTO users (name) VALUES ('x')",
            mariadb,
            target=None,
            targets=targets,
            exec_options={"concurrency": 2},
        ),
        tmp_path,
    )
    assert out.status is TaskStatus.success, out.error
    assert [(d["target"], d["status"], len(d["results"])) for d in out.data] == [
        ("first", "success", 2),
        ("second", "success", 2),
    ]
    assert "=== Target: first (success) ===" in out.result and "=== Target: second (success) ===" in out.result
    assert any(line.startswith("[second] [2/2] INSERT") for _, line in ctx.lines)
    assert mariadb.query("SELECT name FROM users") == other.query("SELECT name FROM users") == [("x",)]


def test_one_failing_target_fails_the_task_and_names_it(mariadb: MariaDb, tmp_path: Path) -> None:
    targets = [mariadb.target(name="good"), mariadb.target(name="bad", db="no_such_db_here")]
    out, _ = run_task(mysql("SELECT 1", mariadb, target=None, targets=targets), tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error.startswith("bad: cannot connect to bad: (1044) Access denied") or out.error.startswith(
        "bad: cannot connect to bad: (1049) Unknown database"
    )
    assert [d["status"] for d in out.data] == ["success", "failed"]


def test_wrong_password_fails_fast_without_showing_it(mariadb: MariaDb, tmp_path: Path) -> None:
    target = {**mariadb.target(), "password": "Wrong-" + PASSWORD}
    out, ctx = run_task(mysql("SELECT 1", mariadb, target=target), tmp_path)
    assert out.status is TaskStatus.failed
    assert "(1045) Access denied for user" in out.error
    assert "Wrong-" not in out.error + out.result + repr(ctx.lines)


def test_named_connection_and_database_precedence(mariadb: MariaDb, tmp_path: Path) -> None:
    conn = {**mariadb.target(), "db": "information_schema"}

    def config(ctx: Harness) -> None:
        ctx.connections = {"main": conn}

    out, _ = run_task(mysql("SELECT DATABASE()", mariadb, target=None, connection="main"), tmp_path, setup=config)
    assert out.data[0]["rows"] == [["information_schema"]]
    out, _ = run_task(
        mysql("SELECT DATABASE()", mariadb, target=None, connection="main", database=mariadb.name),
        tmp_path,
        setup=config,
    )
    assert out.data[0]["rows"] == [[mariadb.name]]
    out, _ = run_task(mysql("SELECT 1", mariadb, target=None, connection="other"), tmp_path, setup=config)
    assert out.error == "params.connection: no connection named 'other' in the agent's config (known: main)"


def test_doris_runs_statement_by_statement_over_the_mysql_protocol(mariadb: MariaDb, tmp_path: Path) -> None:
    """MariaDB stands in for Doris' MySQL-protocol front end (no Doris server can run here)."""
    mariadb.query(USERS)
    script = "INSERT INTO users (name) VALUES ('a'); INSERT INTO users (name) VALUES ('a'); SELECT 1"
    out, _ = run_task(make_task(script, type="doris", target=mariadb.target(port=3306)), tmp_path)
    assert out.status is TaskStatus.failed
    # No transactions: the first insert stays, and no rollback SQL is offered.
    assert [e["stage"] for e in out.data] == ["EXECUTED", "FAILED"]
    assert mariadb.query("SELECT name FROM users") == [("a",)]
    assert "Rollback SQL" not in out.result
    assert DEFAULTS["doris"].port == 9030
    req = TaskRequest(type="doris", command="SELECT 1", params={"target": {"host": "fe"}})
    assert default_exec_timeout(req) == 1800 + 30


def test_tasks_on_one_target_share_a_pooled_connection(mariadb: MariaDb, tmp_path: Path) -> None:
    first, _ = run_task(mysql("SELECT CONNECTION_ID()", mariadb), tmp_path)
    second, _ = run_task(mysql("SELECT CONNECTION_ID()", mariadb), tmp_path)
    assert first.data[0]["rows"] == second.data[0]["rows"]
    # A failed task's connection may be mid-transaction: it is discarded, not handed to the next task.
    failed, _ = run_task(mysql("SELECT CONNECTION_ID(); SELECT nope FROM nowhere", mariadb), tmp_path)
    third, _ = run_task(mysql("SELECT CONNECTION_ID()", mariadb), tmp_path)
    assert failed.data[0]["rows"] != third.data[0]["rows"]


def test_mysql_lexing_runs_exactly_what_was_written(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query("CREATE TABLE s (id INT PRIMARY KEY, stock INT)")
    mariadb.query("INSERT INTO s VALUES (1, 10), (2, 20)")
    script = "UPDATE s SET stock = stock--1 WHERE id = 1; DELETE FROM s WHERE id = 2;\n/*!40101 SET @tg = 1 */;"
    out, _ = run_task(mysql(script, mariadb), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert [e["sql"] for e in out.data][:2] == [
        "UPDATE s SET stock = stock--1 WHERE id = 1",
        "DELETE FROM s WHERE id = 2",
    ]
    assert mariadb.query("SELECT id, stock FROM s") == [(1, 11)]


def test_session_state_does_not_reach_the_next_task(mariadb: MariaDb, tmp_path: Path, request: Any) -> None:
    other: MariaDb = request.getfixturevalue("mariadb_second")
    out, _ = run_task(mysql(f"USE `{other.name}`; SET @leak = 'x'; SELECT DATABASE()", mariadb), tmp_path)
    assert out.data[2]["rows"] == [[other.name]]
    out, _ = run_task(mysql("SELECT DATABASE(), @leak", mariadb), tmp_path)
    assert out.data[0]["rows"] == [[mariadb.name, None]]


def test_insert_rollback_keys_follow_what_the_server_generated(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query(USERS)
    mariadb.query("INSERT INTO users (name) VALUES ('first')")
    script = """
        INSERT INTO users (id, name) VALUES (0, 'zero-means-generate');
        SET SESSION auto_increment_increment = 5;
        INSERT INTO users (name) VALUES ('p'), ('q');
    """
    out, _ = run_task(mysql(script, mariadb), tmp_path)
    assert out.status is TaskStatus.success, out.error
    zero, _, spaced = out.data
    assert zero["rollback_sql"] == [] and zero["rollback_note"].startswith("not reversible: the key 'id'")
    ids = [r[0] for r in mariadb.query("SELECT id FROM users WHERE name IN ('p', 'q') ORDER BY id")]
    assert spaced["rollback_sql"] == [f"DELETE FROM `users` WHERE `id` = {i};" for i in ids]


def test_implicit_commits_are_batch_boundaries(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query(USERS)
    out, _ = run_task(
        mysql("INSERT INTO users (name) VALUES ('kept'); CHECK TABLE users; SELECT * FROM nope", mariadb), tmp_path
    )
    assert out.status is TaskStatus.failed
    assert [e["stage"] for e in out.data] == ["EXECUTED", "EXECUTED", "FAILED"]
    assert mariadb.query("SELECT name FROM users") == [("kept",)]
    out, _ = run_task(mysql("SET autocommit = 1", mariadb), tmp_path)
    assert out.status is TaskStatus.failed and "SET AUTOCOMMIT is not supported" in out.error


def test_rollback_sql_for_odd_shapes(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query("CREATE TABLE Items (Id INT PRIMARY KEY, Name VARCHAR(20), n INT)")
    mariadb.query("INSERT INTO Items VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)")
    before = mariadb.query("SELECT * FROM Items ORDER BY Id")
    script = """
        UPDATE Items SET name = 'changed' WHERE id = 1;
        DELETE FROM Items WHERE N > 2;
        CREATE TEMPORARY TABLE Items (x INT);
    """
    out, _ = run_task(mysql(script, mariadb), tmp_path)
    assert out.status is TaskStatus.success, out.error
    update, delete, temp = out.data
    assert update["rollback_sql"] == ["UPDATE `Items` SET `Name` = 'a' WHERE `Id` = 1;"]
    assert len(delete["rollback_sql"]) == 1
    assert temp["rollback_sql"] == [] and temp["rollback_note"] == "nothing to roll back: a temporary table"
    for entry in (delete, update):
        for sql in entry["rollback_sql"]:
            mariadb.query(sql)
    assert mariadb.query("SELECT * FROM Items ORDER BY Id") == before
    assert "Rollback script (newest first):" in out.result


@pytest.mark.parametrize("several", [False, True])
def test_a_server_error_quoting_the_password_never_shows_it(several: bool, mariadb: MariaDb, tmp_path: Path) -> None:
    """The server echoes the statement in its syntax error: the log line, the entry's error and its SQL
    all hold the password then, and all are scrubbed."""
    script = f"SELECT 1; SELECT FROM '{PASSWORD}'"
    where: dict[str, Any] = {"target": None, "targets": [mariadb.target(name="a")]} if several else {}
    if several:
        where["targets"].append(mariadb.target(name="b"))
    out, ctx = run_task(mysql(script, mariadb, **where), tmp_path)
    assert out.status is TaskStatus.failed
    entries = out.data[0]["results"] if several else out.data
    assert "You have an error in your SQL syntax" in entries[1]["error"] and "******" in entries[1]["error"]
    assert any("failed: (1064)" in line and "******" in line for _, line in ctx.lines)
    assert_no_secret(out, ctx)


def test_sleep_ms_pauses_between_batches(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query(USERS)
    script = "; ".join(f"INSERT INTO users (name) VALUES ('{n}')" for n in "abc")
    started = time.monotonic()
    out, ctx = run_task(mysql(script, mariadb, exec_options={"trans_batch_size": 1, "sleep_ms": 300}), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert time.monotonic() - started >= 0.6  # two pauses: none after the last batch
    commits = [line for _, line in ctx.lines if line.startswith("committed batch")]
    assert commits == [f"committed batch {i} (statements {i}-{i})" for i in (1, 2, 3)]


def test_cancel_during_the_pause_stops_before_the_next_batch(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query(USERS)
    script = "; ".join(f"INSERT INTO users (name) VALUES ('{n}')" for n in "abc")

    def cancel_after_first_commit(ctx: Harness) -> None:
        def on_line(h: Harness, line: str) -> None:
            if line.startswith("committed batch 1 "):
                h.cancel_event.set()

        ctx.on_line = on_line

    started = time.monotonic()
    options = {"trans_batch_size": 1, "sleep_ms": 600_000}
    out, _ = run_task(mysql(script, mariadb, exec_options=options), tmp_path, setup=cancel_after_first_commit)
    assert time.monotonic() - started < 10  # the cancel ended the ten-minute pause
    assert out.status is TaskStatus.canceled
    assert out.error == "canceled between batches"
    assert [e["stage"] for e in out.data] == ["EXECUTED"]
    assert mariadb.query("SELECT name FROM users") == [("a",)]


def test_concurrency_one_works_on_targets_one_at_a_time(mariadb: MariaDb, tmp_path: Path) -> None:
    names = ["first", "second", "third"]
    targets = [mariadb.target(name=n) for n in names]
    task = mysql("SELECT SLEEP(0.1); SELECT 2", mariadb, target=None, targets=targets, exec_options={"concurrency": 1})
    out, ctx = run_task(task, tmp_path)
    assert out.status is TaskStatus.success, out.error
    lines = [line for _, line in ctx.lines]
    # Each target's lines come as one block, from its start to its end, in the order given.
    blocks = [[line.split("] ", 1)[1] for line in lines if line.startswith(f"[{n}] ")] for n in names]
    assert lines == [f"[{n}] {line}" for n, block in zip(names, blocks, strict=True) for line in block]
    assert all(b[0] == "start" and b[-1] == "success" and len(b) > 2 for b in blocks)
