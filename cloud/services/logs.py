"""Reading a task's log: pages by the global line id, which is also the SSE event id."""

from __future__ import annotations

from sqlmodel import Session, col, select

from cloud.db.models import LogEntry
from wire.tasks import LogLevel, LogRead, LogStream, format_task_id


def list_logs(session: Session, task_id: int, after: int, limit: int) -> list[LogRead]:
    """Up to `limit` lines of the task with id > `after`, in the order they were written."""
    rows = session.exec(
        select(LogEntry)
        .where(col(LogEntry.task_id) == task_id, col(LogEntry.id) > after)
        .order_by(col(LogEntry.id))
        .limit(limit)
    ).all()
    tid = format_task_id(task_id)
    return [
        LogRead(
            id=r.id or 0,
            task_id=tid,
            seq=r.seq,
            level=LogLevel(r.level),
            stream=LogStream(r.stream),
            message=r.message,
            timestamp=r.timestamp,
        )
        for r in rows
    ]
