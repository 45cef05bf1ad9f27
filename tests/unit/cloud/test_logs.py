"""Storing and reading a task's log lines: the batched insert and the JSON page built without models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter
from sqlalchemy import select

from cloud.db.engine import Database
from cloud.db.models import TASK_LOGS as L
from cloud.db.types import utcnow
from cloud.services.errors import Conflict
from cloud.services.logs import LOG_SLACK_BYTES, StoredLine, list_logs, store_lines
from cloud.services.present import log_page_json, log_read
from cloud.services.tasks import get_task
from tests.unit.cloud.factory import claim_one, queue_shell
from wire.tasks import LogLevel, LogLine, LogRead, LogStream, format_task_id


def test_the_json_page_is_what_the_models_would_give() -> None:
    columns = ("id", "attempt", "seq", "level", "stream", "message", "timestamp")  # list_logs' order
    rows = [
        (1, 1, 1, "info", "stdout", 'a"é\x01', datetime(2026, 1, 1, tzinfo=UTC)),
        (9, 0, 2, "warn", "system", "x", datetime(2026, 1, 1, 1, 2, 3, 4500, tzinfo=UTC)),
    ]
    models = [log_read(SimpleNamespace(**dict(zip(columns, r, strict=True))), 5) for r in rows]
    assert log_page_json(rows, 5) == TypeAdapter(list[LogRead]).dump_json(models)


def test_a_batch_is_stored_with_its_streams_levels_and_times(db: Database) -> None:
    task = _running_task(db)
    own_time = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    batch = [
        LogLine(seq=1, message="out"),
        LogLine(seq=2, stream=LogStream.stderr, message="err"),
        LogLine(seq=3, stream=LogStream.system, level=LogLevel.error, message="sys", ts=own_time),
    ]
    before = utcnow()
    with db.transaction() as conn:
        assert store_lines(conn, task, batch) == 4
        assert store_lines(conn, get_task(conn, format_task_id(task.id)), batch[1:]) == 4  # a resend: nothing twice
        rows = [StoredLine._make(row) for row in list_logs(conn, task.id, 0, 10)]
        page = orjson.loads(log_page_json(rows, task.id))
    assert [(r.seq, r.stream, r.level, r.message, r.attempt) for r in rows] == [
        (1, "stdout", "info", "out", 1),
        (2, "stderr", "warn", "err", 1),
        (3, "system", "error", "sys", 1),
    ]
    assert all(before - timedelta(seconds=1) <= r.timestamp <= utcnow() for r in rows[:2])
    assert rows[2].timestamp == own_time
    assert [line["message"] for line in page] == ["out", "err", "sys"] and page[2][
        "timestamp"
    ] == "2026-01-02T03:04:05Z"


def _running_task(db: Database) -> Any:
    queue_shell(db)
    assigned = claim_one(db)
    with db.reading() as conn:
        return get_task(conn, assigned.id)


def _store(db: Database, task_id: int, lines: list[LogLine], max_bytes: int | None = None) -> int:
    with db.transaction() as conn:
        return store_lines(conn, get_task(conn, format_task_id(task_id)), lines, max_bytes)


def _read(db: Database, task_id: int, after: int = 0, limit: int = 100_000) -> list[StoredLine]:
    with db.transaction() as conn:
        return [StoredLine._make(row) for row in list_logs(conn, task_id, after, limit)]


def test_runs_are_stored_in_few_rows_and_read_back_a_line_per_id(db: Database) -> None:
    task = _running_task(db)
    run = LogLine(seq=1, message="1", more=[str(i) for i in range(2, 5001)])
    assert _store(db, task.id, [run]) == 5001
    with db.transaction() as conn:
        rows = conn.execute(select(L.c.lines).where(L.c.task_id == task.id)).scalars().all()
    assert rows == [5000]  # a row for the run, not 5,000
    lines = _read(db, task.id)
    assert [(ln.seq, ln.message) for ln in lines] == [(i, str(i)) for i in range(1, 5001)]
    ids = [ln.id for ln in lines]
    assert ids == sorted(set(ids))  # a global id of its own per line, in order
    # Pages that end inside the run go on from there, as a follower resuming with Last-Event-ID does.
    page, after, got = 777, 0, []
    while chunk := _read(db, task.id, after, page):
        got.extend(chunk)
        after = chunk[-1].id
    assert got == lines


def test_a_line_holding_a_newline_stays_one_line(db: Database) -> None:
    task = _running_task(db)
    lines = [
        LogLine(seq=1, message="a", more=["two\nparts", "c"]),
        LogLine(seq=4, stream=LogStream.stderr, message="d"),
        LogLine(seq=5, stream=LogStream.stderr, message=""),
    ]
    assert _store(db, task.id, lines) == 6
    got = _read(db, task.id)
    assert [(ln.seq, ln.stream, ln.message) for ln in got] == [
        (1, "stdout", "a"),
        (2, "stdout", "two\nparts"),
        (3, "stdout", "c"),
        (4, "stderr", "d"),
        (5, "stderr", ""),
    ]


def test_a_resend_overlapping_a_run_stores_only_the_new_lines_and_a_gap_is_refused(db: Database) -> None:
    task = _running_task(db)
    assert _store(db, task.id, [LogLine(seq=1, message="1", more=["2", "3"])]) == 4
    assert _store(db, task.id, [LogLine(seq=2, message="2", more=["3", "4", "5"])]) == 6
    with pytest.raises(Conflict) as refused:
        _store(db, task.id, [LogLine(seq=7, message="7", more=["8"])])
    assert refused.value.extra == {"next_seq": 6}
    assert [ln.message for ln in _read(db, task.id)] == ["1", "2", "3", "4", "5"]


def test_the_cap_cuts_inside_a_run(db: Database) -> None:
    task = _running_task(db)
    cap = 10
    messages = ["x" * 1000] * (LOG_SLACK_BYTES // 1000 + 10)
    assert _store(db, task.id, [LogLine(seq=1, message=messages[0], more=messages[1:])], cap) == len(messages) + 1
    got = _read(db, task.id)
    kept = (cap + LOG_SLACK_BYTES) // 1001
    assert [ln.seq for ln in got] == list(range(1, kept + 2))
    assert got[-1].stream == "system" and f"from seq {kept + 1} on" in got[-1].message
    assert _store(db, task.id, [LogLine(seq=len(messages) + 1, message="later")], cap) == len(messages) + 2
    assert len(_read(db, task.id)) == kept + 1  # nothing more once over
