"""A task's log: storing lines of an attempt in seq order, and reading pages by the global line id
(which is also the SSE event id).

Lines are stored in runs: a row holds consecutive lines of one attempt with the same stream, level and
time (cloud.db.models.LogEntry), so a batch of 5,000 short lines is a row or two, not 5,000. Every line
keeps a global id of its own, `id + i` in its row, and reads give one line per id as before.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, select, update

from cloud.db import events
from cloud.db.models import TASK_LOGS as L
from cloud.db.models import TASKS as T
from cloud.db.types import utcnow
from cloud.services.errors import Conflict
from wire.output import utf8_len
from wire.tasks import LogLevel, LogLine, LogStream

LOG_SLACK_BYTES = 64 * 1024
"""Room over max_log_bytes before lines are dropped: an agent keeps max_log_bytes of output and adds its
own few lines (the marker of what it dropped, a restart note), which must all be stored."""
LOG_ID_BLOCK = 16384
"""PostgreSQL: ids each row owns (its sequence steps by this, migration 0007); a row holds fewer lines."""
MAX_ROW_LINES = 10_000
"""Lines one row holds at most (below LOG_ID_BLOCK)."""
ROWS_PER_READ = 1000


class StoredLine(NamedTuple):
    """The columns of a line as `list_logs` returns it (as a plain tuple: a named one cost more to make
    than the rest of a read; `StoredLine._make(row)` names them)."""

    id: int
    attempt: int
    seq: int
    level: str
    stream: str
    message: str
    timestamp: datetime


LineRow = tuple[int, int, int, str, str, str, datetime]
"""A StoredLine's values."""


_COLS = (L.c.id, L.c.attempt, L.c.seq, L.c.level, L.c.stream, L.c.message, L.c.timestamp, L.c.lines)
_ROWS = (
    select(*_COLS)
    .where(L.c.task_id == bindparam("b_task"), L.c.id > bindparam("b_after"))
    .order_by(L.c.id)
    .limit(bindparam("b_limit"))
)
_HOLDING = (
    select(*_COLS).where(L.c.task_id == bindparam("b_task"), L.c.id <= bindparam("b_after")).order_by(L.c.id.desc())
).limit(1)
"""The row at or before a cursor: it may hold lines past the cursor (a page can end inside a run)."""


def list_logs(conn: Connection, task_id: int, after: int, limit: int) -> list[LineRow]:
    """Up to `limit` lines of the task with id > `after`, in the order they were written, as tuples of
    the StoredLine columns (id, attempt, seq, level, stream, message, timestamp)."""
    out: list[LineRow] = []
    if after > 0:
        row = conn.execute(_HOLDING, {"b_task": task_id, "b_after": after}).first()
        if row is not None and row.lines > 1:
            _expand(row, after, limit, out)
    cursor = after
    while len(out) < limit:
        asked = min(limit - len(out), ROWS_PER_READ)
        rows = conn.execute(_ROWS, {"b_task": task_id, "b_after": cursor, "b_limit": asked}).all()
        for row in rows:
            _expand(row, after, limit, out)
            if len(out) >= limit:
                break
        if len(rows) < asked:
            break
        cursor = rows[-1][0]
    return out


def _expand(row: Any, after: int, limit: int, out: list[LineRow]) -> None:
    """Append the lines of `row` with id > `after` to `out`, until it holds `limit`."""
    id_, attempt, seq, level, stream, message, timestamp, count = row
    if count == 1:
        if id_ > after:
            out.append((id_, attempt, seq, level, stream, message, timestamp))
        return
    skip = max(0, after + 1 - id_)
    messages = message.split("\n")[skip : skip + limit - len(out)]
    n = len(messages)
    first, seq = id_ + skip, seq + skip
    # Columns zipped at C speed: a Python call per line made reading a long log slow.
    out.extend(
        zip(
            range(first, first + n),
            [attempt] * n,
            range(seq, seq + n),
            [level] * n,
            [stream] * n,
            messages,
            [timestamp] * n,
            strict=True,
        )
    )


_DEFAULT_LEVEL = {LogStream.stdout: LogLevel.info, LogStream.stderr: LogLevel.warn}
_STREAM_LEVEL = {
    (stream, level): (stream.value, (level or _DEFAULT_LEVEL.get(stream, LogLevel.info)).value)
    for stream in LogStream
    for level in (None, *LogLevel)
}
"""(stream, level) -> the stored (stream, level) strings: one lookup per run instead of enum work."""


class _Piece(NamedTuple):
    """Consecutive lines to store as they come from one run of a batch."""

    seq: int
    stream: str
    level: str
    ts: datetime | None
    messages: list[str]


def store_lines(conn: Connection, task: Any, lines: list[LogLine], max_bytes: int | None = None) -> int:
    """Store the lines of the task's current attempt from its next expected seq on; returns the new
    next seq. Repeats are skipped; a gap is a Conflict carrying the seq to resend from.

    With `max_bytes`, lines past that much log in the attempt (plus LOG_SLACK_BYTES) are not stored: the
    first of them is replaced by one system line saying so. Their seqs count all the same, so the
    agent's numbering and its result's `log_lines` still match."""
    expected = int(task.next_seq)
    pieces = _fresh(lines, expected)
    if not pieces:
        return expected
    used = before = int(getattr(task, "log_bytes", 0) or 0)
    budget = None if max_bytes is None else max_bytes + LOG_SLACK_BYTES
    kept: list[_Piece] = []
    for piece in pieces:
        if budget is None:
            kept.append(piece)
        elif used <= budget:
            fit, used = _fitting(piece.messages, used, budget)
            if fit:
                kept.append(piece._replace(messages=piece.messages[:fit]))
            if fit < len(piece.messages):
                kept.append(_dropping(piece.seq + fit, max_bytes or 0))
                used = budget + 1  # over: every later line of the attempt is dropped
    if kept:
        _insert(conn, task, _rows(kept))
    new_next = pieces[-1].seq + len(pieces[-1].messages)
    res = conn.execute(
        update(T).where(T.c.id == task.id, T.c.next_seq == expected).values(next_seq=new_next, log_bytes=used)
    )
    if res.rowcount != 1:
        raise Conflict("lines: a concurrent batch moved the log on; resend", next_seq=expected)
    if budget is not None and used > before:  # the bytes are counted where a cap is kept (every agent batch)
        events.observe(conn, "log.stored", min(used, budget) - before)
    return new_next


def _fresh(lines: list[LogLine], expected: int) -> list[_Piece]:
    """The batch's lines from seq `expected` on, in seq order, consecutive ones of the same stream, level
    and time in one piece; Conflict on a gap (nothing of the batch is stored then: the transaction rolls
    back, and the agent resends from `expected`)."""
    at = expected
    pieces: list[_Piece] = []
    for ln in sorted((ln for ln in lines if ln.last_seq >= expected), key=lambda ln: ln.seq):
        start = max(ln.seq, expected)  # the part before `expected` is a resend of stored lines
        if start != at:
            raise Conflict(f"lines: log gap, expected seq {at} but got {start}", next_seq=expected)
        stream, level = _STREAM_LEVEL[ln.stream, ln.level]
        last = pieces[-1] if pieces else None
        if last is not None and last.stream is stream and last.level is level and last.ts == ln.ts:
            messages = last.messages  # an older agent's batch is a line per object: one piece all the same
        else:
            messages = []
            pieces.append(_Piece(start, stream, level, ln.ts, messages))
        if start > ln.seq:
            messages.extend(ln.messages()[start - ln.seq :])
        else:
            messages.append(ln.message)
            if ln.more:
                messages.extend(ln.more)
        at = ln.last_seq + 1
    return pieces


def _fitting(messages: list[str], used: int, budget: int) -> tuple[int, int]:
    """How many of `messages` fit in the budget (each counted with its newline, as the agent counts it),
    and the bytes used after them."""
    size = utf8_len("\n".join(messages)) + 1
    if used + size <= budget:
        return len(messages), used + size
    for i, message in enumerate(messages):
        size = utf8_len(message) + 1
        if used + size > budget:
            return i, used
        used += size
    return len(messages), used


def _rows(pieces: list[_Piece]) -> list[_Piece]:
    """The rows to insert: a piece cut where a line holds a newline (that line in a row of its own, as a
    row's text is split on newlines) and every MAX_ROW_LINES lines."""
    rows: list[_Piece] = []
    for piece in pieces:
        rows.extend(piece._replace(seq=seq, messages=messages) for seq, messages in _segments(piece))
    return rows


def _segments(piece: _Piece) -> list[tuple[int, list[str]]]:
    """(first seq, lines) of each row `piece` makes."""
    messages = piece.messages
    if "\n".join(messages).count("\n") == len(messages) - 1 and len(messages) <= MAX_ROW_LINES:
        return [(piece.seq, messages)]
    out: list[tuple[int, list[str]]] = []
    start = 0
    for i, message in enumerate(messages):
        if "\n" in message or i - start == MAX_ROW_LINES:
            if i > start:
                out.append((piece.seq + start, messages[start:i]))
            start = i
            if "\n" in message:
                out.append((piece.seq + i, [message]))
                start = i + 1
    if start < len(messages):
        out.append((piece.seq + start, messages[start:]))
    return out


_COLUMNS = ("task_id", "attempt", "seq", "stream", "level", "message", "timestamp", "lines")


@functools.cache
def _insert_sql(paramstyle: str, with_id: bool) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    columns = ("id", *_COLUMNS) if with_id else _COLUMNS
    return f"INSERT INTO {L.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"


def _insert(conn: Connection, task: Any, rows: list[_Piece]) -> None:
    """One executemany of plain tuples (SQLAlchemy's per-row parameter processing cost more than the
    insert). SQLite gets the ids of every line reserved at once, densely; PostgreSQL's sequence gives
    each row a block of LOG_ID_BLOCK ids."""
    dialect = conn.dialect
    # The dialect's own processor (SQLite's makes the same text SQLAlchemy's insert would store).
    to_db = L.c.timestamp.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
    now = to_db(utcnow())
    task_id, attempt = task.id, task.attempts
    params: list[tuple[Any, ...]] = [
        (
            task_id,
            attempt,
            row.seq,
            row.stream,
            row.level,
            row.messages[0] if len(row.messages) == 1 else "\n".join(row.messages),
            now if row.ts is None else to_db(row.ts),
            len(row.messages),
        )
        for row in rows
    ]
    with_id = dialect.name == "sqlite"
    if with_id:
        next_id = _reserve_sqlite_ids(conn, sum(len(row.messages) for row in rows))
        for i, row in enumerate(rows):
            params[i] = (next_id, *params[i])
            next_id += len(row.messages)
    conn.exec_driver_sql(_insert_sql(dialect.paramstyle, with_id), params)


def _reserve_sqlite_ids(conn: Connection, count: int) -> int:
    """The first of `count` consecutive line ids nobody used, taken from the table's AUTOINCREMENT
    counter (this transaction holds SQLite's one write lock from here on, so no one else takes them)."""
    bump = "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = ? RETURNING seq"
    last = conn.exec_driver_sql(bump, (count, L.name)).scalar()
    if last is None:  # no line was ever stored: the counter's row does not exist yet
        conn.exec_driver_sql(
            f"INSERT INTO sqlite_sequence (name, seq) SELECT ?, coalesce(max(id), 0) + ? FROM {L.name}",
            (L.name, count),
        )
        last = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (L.name,)).scalar_one()
    return int(last) - count + 1


def _dropping(seq: int, max_bytes: int) -> _Piece:
    message = (
        f"[tiangong: this attempt's log passed max_log_bytes ({max_bytes} bytes); "
        f"the cloud dropped its lines from seq {seq} on]"
    )
    stream, level = _STREAM_LEVEL[LogStream.system, LogLevel.warn]
    return _Piece(seq, stream, level, None, [message])


def system_line(conn: Connection, task: Any, message: str, level: LogLevel) -> None:
    """A line written by the cloud itself (cancel, lost agent), next in the attempt's seq order.

    `task` is the task's row as read in this transaction (its attempts and next_seq are used)."""
    store_lines(conn, task, [LogLine(seq=task.next_seq, stream=LogStream.system, level=level, message=message)])
