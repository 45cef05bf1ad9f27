"""Reading a task's log: pages by the global line id, which is also the SSE event id."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from cloud.db.models import TASK_LOGS as L
from wire.tasks import LogLevel, LogRead, LogStream, format_task_id

_PAGE = (
    select(L.c.id, L.c.seq, L.c.level, L.c.stream, L.c.message, L.c.timestamp)
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
            seq=r.seq,
            level=LogLevel(r.level),
            stream=LogStream(r.stream),
            message=r.message,
            timestamp=r.timestamp,
        )
        for r in rows
    ]
