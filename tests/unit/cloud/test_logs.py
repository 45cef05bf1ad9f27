"""Storing and reading a task's log lines: the batched insert and the JSON page built without models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
from cryptography.fernet import Fernet
from pydantic import TypeAdapter

from cloud.db.engine import Database
from cloud.db.types import utcnow
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache
from cloud.services.logs import list_logs, store_lines
from cloud.services.present import log_page_json, log_read
from cloud.services.runs import claim_tasks
from cloud.services.tasks import create_task, get_task
from wire.tasks import LogLevel, LogLine, LogRead, LogStream, TaskCreate

SEALER = Sealer([Fernet.generate_key()])


def test_the_json_page_is_what_the_models_would_give() -> None:
    columns = ("id", "attempt", "seq", "level", "stream", "message", "timestamp")  # list_logs' order
    rows = [
        (1, 1, 1, "info", "stdout", 'a"é\x01', datetime(2026, 1, 1, tzinfo=UTC)),
        (9, 0, 2, "warn", "system", "x", datetime(2026, 1, 1, 1, 2, 3, 4500, tzinfo=UTC)),
    ]
    models = [log_read(SimpleNamespace(**dict(zip(columns, r, strict=True))), 5) for r in rows]
    assert log_page_json(rows, 5) == TypeAdapter(list[LogRead]).dump_json(models)


def test_a_batch_is_stored_with_its_streams_levels_and_times(db: Database) -> None:
    with db.transaction() as conn:
        create_task(
            conn,
            TaskCreate(agent_id="a1", type="shell", command="true"),
            agents=AgentCache(),
            offline_after=60,
            sealer=SEALER,
        )
    with db.transaction() as conn:
        [assigned] = claim_tasks(conn, "a1", 1, lease_seconds=30, max_log_bytes=1 << 20, sealer=SEALER)
    own_time = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    batch = [
        LogLine(seq=1, message="out"),
        LogLine(seq=2, stream=LogStream.stderr, message="err"),
        LogLine(seq=3, stream=LogStream.system, level=LogLevel.error, message="sys", ts=own_time),
    ]
    before = utcnow()
    with db.transaction() as conn:
        task = get_task(conn, assigned.id)
        assert store_lines(conn, task, batch) == 4
        assert store_lines(conn, get_task(conn, assigned.id), batch[1:]) == 4  # a resend: nothing twice
        rows = list_logs(conn, task.id, 0, 10)
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
