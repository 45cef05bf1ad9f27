"""A task's log: storing lines of an attempt in seq order, and reading pages by the global line id
(which is also the SSE event id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from cloud.db.models import TASK_LOGS as L
from cloud.db.models import TASKS as T
from cloud.db.types import utcnow
from cloud.services.errors import Conflict
from wire.tasks import LogLevel, LogLine, LogRead, LogStream, format_task_id

_PAGE = (
    select(L.c.id, L.c.attempt, L.c.seq, L.c.level, L.c.stream, L.c.message, L.c.timestamp)
    .where(L.c.task_id == bindparam("b_task"), L.c.id > bindparam("b_after"))
    .order_by(L.c.id)
    .limit(bindparam("b_limit"))
)


def list_logs(conn: Connection, task_id: int, after: int, limit: int) -> list[LogRead]:
    """Up to `limit` lines of the task with id > `after`, in the order they were written."""
    rows = conn.execute(_PAGE, {"b_task": task_id, "b_after": after, "b_limit": limit}).all()
    tid = format_task_id(task_id)
    return [
        LogRead(
            id=r.id,
            task_id=tid,
            attempt=r.attempt,
            seq=r.seq,
            level=LogLevel(r.level),
            stream=LogStream(r.stream),
            message=r.message,
            timestamp=r.timestamp,
        )
        for r in rows
    ]


_DEFAULT_LEVEL = {LogStream.stdout: LogLevel.info, LogStream.stderr: LogLevel.warn}


def store_lines(conn: Connection, task: Any, lines: list[LogLine]) -> int:
    """Store the lines of the task's current attempt from its next expected seq on; returns the new
    next seq. Repeats are skipped; a gap is a Conflict carrying the seq to resend from."""
    expected = int(task.next_seq)
    fresh = sorted((ln for ln in lines if ln.seq >= expected), key=lambda ln: ln.seq)
    if not fresh:
        return expected
    for i, line in enumerate(fresh):
        if line.seq != expected + i:
            # Nothing of this batch is stored (the transaction rolls back), so resend from `expected`.
            raise Conflict(f"lines: log gap, expected seq {expected + i} but got {line.seq}", next_seq=expected)
    now = utcnow()
    conn.execute(
        insert(L),
        [
            {
                "task_id": task.id,
                "attempt": task.attempts,
                "seq": ln.seq,
                "stream": ln.stream.value,
                "level": (ln.level or _DEFAULT_LEVEL.get(ln.stream, LogLevel.info)).value,
                "message": ln.message,
                "timestamp": ln.ts or now,
            }
            for ln in fresh
        ],
    )
    new_next = expected + len(fresh)
    res = conn.execute(update(T).where(T.c.id == task.id, T.c.next_seq == expected).values(next_seq=new_next))
    if res.rowcount != 1:
        raise Conflict("lines: a concurrent batch moved the log on; resend", next_seq=expected)
    return new_next


def system_line(conn: Connection, task: Any, message: str, level: LogLevel) -> None:
    """A line written by the cloud itself (cancel, lost agent), next in the attempt's seq order.

    `task` is the task's row as read in this transaction (its attempts and next_seq are used)."""
    store_lines(conn, task, [LogLine(seq=task.next_seq, stream=LogStream.system, level=level, message=message)])
