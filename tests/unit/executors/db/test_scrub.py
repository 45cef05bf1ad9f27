"""Secrets in database task output: a target's password cut short in a log line still does not show."""

from __future__ import annotations

from executors.db.params import scrub, scrub_value
from executors.db.split import split_sql

PASSWORD = "Tg-s3cret-pw-91"


def test_a_password_cut_by_a_shortened_statement_is_masked() -> None:
    """`Statement.short` cut the statement inside the password: 'Tg-s3c...' showed in the log line (the
    whole value no longer matched), 6 of its 15 characters."""
    stmt = split_sql(f"ALTER USER 'app'@'localhost' IDENTIFIED WITH mysql_native_password BY '{PASSWORD}'")[0]
    line = scrub(f"[1/1] {stmt.short()}: 0 rows affected", [PASSWORD])
    assert "Tg-s3" not in line
    assert line.endswith("BY '******...: 0 rows affected")


def test_cut_text_in_the_result_is_masked_too() -> None:
    assert scrub_value({"sql": [f"BY '{PASSWORD[:9]} ..."]}, [PASSWORD]) == {"sql": ["BY '****** ..."]}


def test_ordinary_text_before_a_cut_is_left_alone() -> None:
    text = "SELECT... Tg-... (3 characters are too few to tell) and the whole ******"
    assert scrub(f"SELECT... Tg-... (3 characters are too few to tell) and the whole {PASSWORD}", [PASSWORD]) == text
