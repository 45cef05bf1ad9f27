"""A task's log: storing lines of an attempt in seq order, and reading pages by the global line id
(which is also the SSE event id)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from cloud.db.models import TASK_LOGS as L
from cloud.db.models import TASKS as T
from cloud.db.types import utcnow
from cloud.services.errors import Conflict
from wire.output import utf8_len
from wire.tasks import LogLevel, LogLine, LogStream

LOG_SLACK_BYTES = 64 * 1024
"""Room over max_log_bytes before lines are dropped: an agent keeps max_log_bytes of output and adds its
own few lines (the marker of what it dropped, a restart note), which must all be stored."""

_PAGE = (
    select(L.c.id, L.c.attempt, L.c.seq, L.c.level, L.c.stream, L.c.message, L.c.timestamp)
    .where(L.c.task_id == bindparam("b_task"), L.c.id > bindparam("b_after"))
    .order_by(L.c.id)
    .limit(bindparam("b_limit"))
)


def list_logs(conn: Connection, task_id: int, after: int, limit: int) -> list[Any]:
    """Up to `limit` lines of the task with id > `after`, in the order they were written (present.log_read
    and present.log_page_json show them); columns: id, attempt, seq, level, stream, message, timestamp."""
    rows = conn.execute(_PAGE, {"b_task": task_id, "b_after": after, "b_limit": limit}).all()
    return list(rows)


_DEFAULT_LEVEL = {LogStream.stdout: LogLevel.info, LogStream.stderr: LogLevel.warn}
_STREAM_LEVEL = {
    (stream, level): (stream.value, (level or _DEFAULT_LEVEL.get(stream, LogLevel.info)).value)
    for stream in LogStream
    for level in (None, *LogLevel)
}
"""(stream, level) -> the stored (stream, level) strings: one lookup per line instead of enum work."""


def store_lines(conn: Connection, task: Any, lines: list[LogLine], max_bytes: int | None = None) -> int:
    """Store the lines of the task's current attempt from its next expected seq on; returns the new
    next seq. Repeats are skipped; a gap is a Conflict carrying the seq to resend from.

    With `max_bytes`, lines past that much log in the attempt (plus LOG_SLACK_BYTES) are not stored: the
    first of them is replaced by one system line saying so. Their seqs count all the same, so the
    agent's numbering and its result's `log_lines` still match."""
    expected = int(task.next_seq)
    fresh = sorted((ln for ln in lines if ln.seq >= expected), key=lambda ln: ln.seq)
    if not fresh:
        return expected
    for i, line in enumerate(fresh):
        if line.seq != expected + i:
            # Nothing of this batch is stored (the transaction rolls back), so resend from `expected`.
            raise Conflict(f"lines: log gap, expected seq {expected + i} but got {line.seq}", next_seq=expected)
    used = int(getattr(task, "log_bytes", 0) or 0)
    budget = None if max_bytes is None else max_bytes + LOG_SLACK_BYTES
    kept: list[LogLine] = []
    for line in fresh:
        size = utf8_len(line.message) + 1  # with its newline, as the agent counts it
        if budget is None or used + size <= budget:
            kept.append(line)
            used += size
        elif used <= budget:
            kept.append(_dropping(line.seq, max_bytes or 0))
            used = budget + 1  # over: every later line of the attempt is dropped
    if kept:
        _insert(conn, task, kept)
    new_next = expected + len(fresh)
    res = conn.execute(
        update(T).where(T.c.id == task.id, T.c.next_seq == expected).values(next_seq=new_next, log_bytes=used)
    )
    if res.rowcount != 1:
        raise Conflict("lines: a concurrent batch moved the log on; resend", next_seq=expected)
    return new_next


_COLUMNS = ("task_id", "attempt", "seq", "stream", "level", "message", "timestamp")


@functools.cache
def _insert_sql(paramstyle: str) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    return f"INSERT INTO {L.name} ({', '.join(_COLUMNS)}) VALUES ({', '.join([mark] * len(_COLUMNS))})"


def _insert(conn: Connection, task: Any, lines: list[LogLine]) -> None:
    """One executemany of plain tuples: SQLAlchemy's per-row parameter processing cost more than SQLite's
    own insert. The timestamp is converted for the database once per batch (lines rarely carry their own)."""
    dialect = conn.dialect
    # The dialect's own processor (SQLite's makes the same text SQLAlchemy's insert would store).
    to_db = L.c.timestamp.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
    now = to_db(utcnow())
    task_id, attempt = task.id, task.attempts
    rows = [
        (
            task_id,
            attempt,
            ln.seq,
            *_STREAM_LEVEL[ln.stream, ln.level],
            ln.message,
            now if ln.ts is None else to_db(ln.ts),
        )
        for ln in lines
    ]
    conn.exec_driver_sql(_insert_sql(dialect.paramstyle), rows)


def _dropping(seq: int, max_bytes: int) -> LogLine:
    message = (
        f"[tiangong: this attempt's log passed max_log_bytes ({max_bytes} bytes); "
        f"the cloud dropped its lines from seq {seq} on]"
    )
    return LogLine(seq=seq, stream=LogStream.system, level=LogLevel.warn, message=message)


def system_line(conn: Connection, task: Any, message: str, level: LogLevel) -> None:
    """A line written by the cloud itself (cancel, lost agent), next in the attempt's seq order.

    `task` is the task's row as read in this transaction (its attempts and next_seq are used)."""
    store_lines(conn, task, [LogLine(seq=task.next_seq, stream=LogStream.system, level=level, message=message)])
