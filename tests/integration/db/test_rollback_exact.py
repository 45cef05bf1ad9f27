"""Rollback SQL restores every column exactly, on the real MariaDB and PostgreSQL, or says why it cannot.

Each case snapshots every column of every row (invisible ones by name, floats bit for bit), runs an UPDATE
and a DELETE through the executor, applies the reported rollback SQL newest first and compares again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.db.conftest import MariaDb, PgDb
from tests.integration.db.test_mysql import mysql
from tests.integration.db.test_postgres import postgres
from tests.unit.executors.harness import run_task
from wire.tasks import TaskStatus

OLD_STAMP = "2001-02-03 04:05:06.123456"

GAUGES = """CREATE TABLE gauges (
    id INT PRIMARY KEY,
    name VARCHAR(20) NOT NULL,
    f FLOAT,
    d DOUBLE,
    secret INT INVISIBLE DEFAULT 7,
    twice INT AS (id * 2) VIRTUAL,
    label VARCHAR(30) AS (CONCAT(name, '#', id)) PERSISTENT,
    stamped TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    span TIME(3),
    flags BIT(5),
    spot POINT
)"""
GAUGES_SNAPSHOT = (
    # `f + 0e0`: a FLOAT widened to DOUBLE loses nothing, so equal doubles mean equal bits.
    "SELECT id, name, f + 0e0, d + 0e0, secret, twice, label, stamped, span, HEX(flags), HEX(spot)"
    " FROM gauges ORDER BY id"
)


def _apply_newest_first(entries: list[dict[str, Any]], run: Any) -> None:
    for entry in reversed(entries):
        for sql in entry.get("rollback_sql", []):
            run(sql)


def test_mariadb_restores_float_invisible_generated_and_on_update_columns(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query(GAUGES)
    mariadb.query(
        "INSERT INTO gauges (id, name, f, d, secret, stamped, span, flags, spot) VALUES"
        f" (1, 'one', 123456.789, 0.1 + 0.2, 41, '{OLD_STAMP}', '-838:59:58.999', b'10101', POINT(1.5, -2)),"
        f" (2, 'two', 1.17549435e-38, -1e308, 42, '{OLD_STAMP}', '00:00:00.001', b'0', NULL),"
        f" (3, 'three', NULL, NULL, NULL, '{OLD_STAMP}', NULL, NULL, POINT(0, 0))"
    )
    before = mariadb.query(GAUGES_SNAPSHOT)
    assert before[0][2] == 123456.7890625  # what MariaDB stored for 123456.789 (its text protocol says 123457)
    script = """
        UPDATE gauges SET name = CONCAT(name, '!'), f = f * 2, secret = 0 WHERE id <= 2;
        DELETE FROM gauges WHERE id >= 2;
    """
    out, _ = run_task(mysql(script, mariadb), tmp_path)
    assert out.status is TaskStatus.success, out.error
    update, delete = out.data
    assert (update["affected_rows"], delete["affected_rows"]) == (2, 2)
    assert (update["rollback_note"], delete["rollback_note"]) == ("", "")
    # The server restamped the updated rows; the rollback sets the old stamp back explicitly.
    assert mariadb.query("SELECT stamped FROM gauges WHERE id = 1")[0][0] != before[0][7]
    (epoch,) = mariadb.query(f"SELECT UNIX_TIMESTAMP('{OLD_STAMP}')")[0]
    assert update["rollback_sql"][0] == (
        "UPDATE `gauges` SET `name` = 'one', `f` = 123456.7890625e0, `secret` = 41,"
        f" `stamped` = FROM_UNIXTIME({epoch}) WHERE `id` = 1;"
    )
    rollback = update["rollback_sql"] + delete["rollback_sql"]
    assert not any("`twice`" in sql or "`label`" in sql for sql in rollback)  # generated: they recompute
    assert all("`secret`" in sql for sql in delete["rollback_sql"])  # invisible, yet re-inserted
    _apply_newest_first(out.data, mariadb.query)
    assert mariadb.query(GAUGES_SNAPSHOT) == before


def test_mariadb_timestamps_come_back_whatever_the_time_zone(mariadb: MariaDb, tmp_path: Path) -> None:
    """The script runs in +08:00, the rollback SQL in the server's default zone: the instants still match."""
    mariadb.query("CREATE TABLE visits (id INT PRIMARY KEY, at TIMESTAMP(6) NULL, n INT)")
    mariadb.query(f"INSERT INTO visits VALUES (1, '{OLD_STAMP}', 1), (2, '0000-00-00 00:00:00', 2), (3, NULL, 3)")
    snapshot = "SELECT id, UNIX_TIMESTAMP(at), at, n FROM visits ORDER BY id"
    before = mariadb.query(snapshot)
    script = (
        "SET time_zone = '+08:00'; UPDATE visits SET at = NOW(6), n = n + 1 WHERE id >= 1;"
        " DELETE FROM visits WHERE id >= 2"
    )
    out, _ = run_task(mysql(script, mariadb), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert mariadb.query("SELECT COUNT(*) FROM visits") == [(1,)]
    _apply_newest_first(out.data, mariadb.query)
    assert mariadb.query(snapshot) == before


def test_mariadb_insert_without_column_list_skips_invisible_columns(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query("CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(20), secret INT INVISIBLE DEFAULT 7)")
    out, _ = run_task(mysql("INSERT INTO tags VALUES (5, 'five'), (6, 'six')", mariadb), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert out.data[0]["rollback_sql"] == ["DELETE FROM `tags` WHERE `id` = 5;", "DELETE FROM `tags` WHERE `id` = 6;"]


def test_mariadb_says_when_it_cannot_restore_exactly(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.query("CREATE TABLE logbook (msg TEXT, at INT)")
    mariadb.query("INSERT INTO logbook VALUES ('a', 1), ('a', 1)")
    mariadb.query("CREATE TABLE counters (id INT AUTO_INCREMENT PRIMARY KEY, n INT)")
    conn = mariadb.connect()
    with conn.cursor() as cur:  # an id of 0 is only stored under NO_AUTO_VALUE_ON_ZERO
        cur.execute("SET sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        cur.execute("INSERT INTO counters VALUES (0, 10), (1, 11)")
    conn.close()
    script = (
        "UPDATE logbook SET at = 2 WHERE at IS NOT NULL; DELETE FROM logbook WHERE at = 2;"
        " DELETE FROM counters WHERE n >= 10"
    )
    out, _ = run_task(mysql(script, mariadb), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert [(e["rollback_sql"], e["rollback_note"]) for e in out.data] == [
        ([], "cannot restore exactly: `logbook` has no primary key"),
        ([], "cannot restore exactly: `logbook` has no primary key"),
        ([], "cannot restore exactly: 'id' is 0 in an AUTO_INCREMENT column: inserting it generates a new value"),
    ]
    assert "cannot restore exactly: `logbook` has no primary key" in out.result
    assert mariadb.query("SELECT COUNT(*) FROM logbook") == [(0,)]  # the statements ran all the same
    assert mariadb.query("SELECT COUNT(*) FROM counters") == [(0,)]


METERS = """CREATE TABLE meters (
    id INT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    r REAL,
    dp DOUBLE PRECISION,
    qty INT,
    price NUMERIC(12, 4),
    total NUMERIC GENERATED ALWAYS AS (qty * price) STORED,
    seen TIMESTAMPTZ
)"""
METERS_SNAPSHOT = (
    # float4send/float8send: the values' bytes, so equal means bit for bit.
    "SELECT id, name, float4send(r), float8send(dp), qty, price::text, total::text, seen::text FROM meters ORDER BY id"
)


def test_postgres_restores_identity_always_generated_and_float_columns(pg: PgDb, tmp_path: Path) -> None:
    pg.query(METERS)
    pg.query(
        "INSERT INTO meters (name, r, dp, qty, price, seen) VALUES"
        " ('a', 123456.789, 0.1::float8 + 0.2::float8, 3, 1.2345, '2001-02-03 04:05:06.123456+07'),"
        " ('b', 1e-40, '-Infinity', 7, 99999999.9999, 'infinity'),"
        " ('c', 'NaN', 5e-324, NULL, NULL, NULL)"
    )
    before = pg.query(METERS_SNAPSHOT)
    script = (
        "UPDATE meters SET name = name || '!', r = r * 2, qty = qty + 1 WHERE id <= 2; DELETE FROM meters WHERE id >= 2"
    )
    out, _ = run_task(postgres(script, pg), tmp_path)
    assert out.status is TaskStatus.success, out.error
    update, delete = out.data
    assert (update["affected_rows"], delete["affected_rows"]) == (2, 2)
    assert (update["rollback_note"], delete["rollback_note"]) == ("", "")
    assert all(" OVERRIDING SYSTEM VALUE VALUES (" in sql for sql in delete["rollback_sql"])
    assert not any('"total"' in sql for sql in update["rollback_sql"] + delete["rollback_sql"])
    _apply_newest_first(out.data, pg.query)
    assert pg.query(METERS_SNAPSHOT) == before


def test_postgres_reads_the_columns_an_alter_added_earlier_in_the_script(pg: PgDb, tmp_path: Path) -> None:
    pg.query("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
    pg.query("INSERT INTO notes VALUES (1, 'a'), (2, 'b')")
    script = (
        "UPDATE notes SET body = 'x' WHERE id = 1; ALTER TABLE notes ADD COLUMN tag TEXT DEFAULT 'new';"
        " UPDATE notes SET tag = 'kept' WHERE id = 2; DELETE FROM notes WHERE id = 2"
    )
    out, _ = run_task(postgres(script, pg), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert out.data[3]["rollback_sql"] == [
        """INSERT INTO "notes" ("id", "body", "tag") VALUES ('2'::integer, 'b'::text, 'kept'::text);"""
    ]


def test_postgres_says_when_it_cannot_restore_exactly(pg: PgDb, tmp_path: Path) -> None:
    pg.query("CREATE TABLE tickets (k INT PRIMARY KEY, seq INT GENERATED ALWAYS AS IDENTITY)")
    pg.query("INSERT INTO tickets (k) VALUES (1), (2)")
    pg.query("CREATE TABLE logbook (msg TEXT)")
    pg.query("INSERT INTO logbook VALUES ('a'), ('a')")
    script = "UPDATE tickets SET seq = DEFAULT WHERE k = 1; DELETE FROM logbook WHERE msg IS NOT NULL"
    out, _ = run_task(postgres(script, pg), tmp_path)
    assert out.status is TaskStatus.success, out.error
    assert [(e["rollback_sql"], e["rollback_note"]) for e in out.data] == [
        ([], "cannot restore exactly: an UPDATE cannot set the GENERATED ALWAYS identity 'seq'"),
        ([], 'cannot restore exactly: "logbook" has no primary key'),
    ]
    assert pg.query("SELECT k, seq FROM tickets ORDER BY k") == [(1, 3), (2, 2)]
    assert pg.query("SELECT count(*) FROM logbook") == [(0,)]


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("extra_float_digits = 0", "extra_float_digits is 0: floats would be read rounded"),
        (
            "DateStyle = 'SQL, DMY'",
            "DateStyle is 'SQL, DMY': dates would be read in a form another session may misread",
        ),
        (
            "IntervalStyle = 'sql_standard'",
            "IntervalStyle is 'sql_standard': intervals would be read in a form another session may misread",
        ),
    ],
)
def test_postgres_session_settings_that_would_read_values_inexactly(
    setting: str, why: str, pg: PgDb, tmp_path: Path
) -> None:
    pg.query("CREATE TABLE readings (id INT PRIMARY KEY, r REAL, d DATE, i INTERVAL)")
    pg.query("INSERT INTO readings VALUES (1, 123456.789, '2001-02-03', '-1 day 02:03:04')")
    out, _ = run_task(
        postgres(f"SET {setting}; UPDATE readings SET r = 0, d = NULL, i = NULL WHERE id >= 1", pg), tmp_path
    )
    assert out.status is TaskStatus.success, out.error
    update = out.data[1]
    assert (update["rollback_sql"], update["rollback_note"]) == ([], f"cannot restore exactly: {why}")
    assert pg.query("SELECT r, d, i FROM readings") == [(0.0, None, None)]
