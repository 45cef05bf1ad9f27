"""Selecting tasks by the seed's TaskQueryCondition list (JSON-RPC task_query and task_delete)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, select

from cloud.db.batches import in_batches
from cloud.db.models import TASK_LOGS as L
from cloud.db.models import TASKS as T
from cloud.services.errors import BadRequest
from cloud.services.tasks import PENDING, RUNNING, TaskRow
from wire.tasks import TaskStatus, parse_task_id

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
_FAILED = [TaskStatus.failed.value, TaskStatus.timeout.value, TaskStatus.canceled.value]


def _ms(value: Any, name: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name}: must be a timestamp in milliseconds")
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise BadRequest(f"{name}: timestamp out of range") from None


def _limit(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"{name}: must be a whole number from 1 to {MAX_LIMIT}")
    return value


def parse_conditions(conditions: Any) -> tuple[list[Any], int | None]:
    """SQL filters (AND-ed) and an explicit limit from `[{"uuid": ...}, {"type": ...}, {"limit": 10}, ...]`."""
    if not isinstance(conditions, list):
        raise BadRequest("condition: must be a list of condition objects")
    filters: list[Any] = []
    limit: int | None = None
    for i, cond in enumerate(conditions):
        where = f"condition[{i}]"
        if not isinstance(cond, dict) or len(cond) != 1:
            raise BadRequest(f"{where}: must be an object with exactly one key")
        ((key, value),) = cond.items()
        if key == "task_id":
            number = parse_task_id(value) if isinstance(value, str) else value  # `task-104` as REST shows it
            if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 2**63:
                raise BadRequest(f"{where}.task_id: must be an integer from 0 to 2^63-1 or an id like task-104")
            filters.append(T.c.id == number)
        elif key in ("uuid", "type", "cron_source"):
            if not isinstance(value, str):
                raise BadRequest(f"{where}.{key}: must be a string")
            column = {"uuid": T.c.agent_id, "type": T.c.type, "cron_source": T.c.cron_source}[key]
            filters.append(column == value)
        elif key == "timestamp_from":
            filters.append(T.c.created_at >= _ms(value, f"{where}.timestamp_from"))
        elif key == "timestamp_to":
            filters.append(T.c.created_at <= _ms(value, f"{where}.timestamp_to"))
        elif key == "is_success":
            filters.append(T.c.status == TaskStatus.success.value)
        elif key == "is_failure":
            filters.append(T.c.status.in_(_FAILED))
        elif key == "is_running":
            filters.append(T.c.status.in_([PENDING, RUNNING]))
        elif key == "limit":
            limit = _limit(value, f"{where}.limit")
        elif key == "last":
            limit = 1
        else:
            raise BadRequest(
                f"{where}: unknown condition {key!r}; known: task_id, uuid, type, cron_source, timestamp_from, "
                "timestamp_to, is_success, is_failure, is_running, limit, last"
            )
    return filters, limit


class TooLarge(Exception):
    """The matching tasks hold more than the caller may be sent at once."""

    def __init__(self, budget: int, rows: int) -> None:
        super().__init__(f"the first {rows} matching tasks pass the {budget}-byte limit of one response")
        self.budget = budget


def query_tasks(conn: Connection, conditions: Any, max_bytes: int | None = None) -> list[TaskRow]:
    """Matching tasks, newest first (timestamp desc, id desc); at most the limit (default 1,000).

    Rows are read in batches and their size counted as they come, so a query over tasks with large
    results stops (TooLarge) at `max_bytes` instead of first loading them all."""
    filters, limit = parse_conditions(conditions)
    stmt = select(T).where(*filters).order_by(T.c.created_at.desc(), T.c.id.desc()).limit(limit or DEFAULT_LIMIT)
    if max_bytes is None:
        return list(conn.execute(stmt).all())
    rows: list[TaskRow] = []
    used = 0
    # Closed on the way out: a PostgreSQL server-side cursor left open past TooLarge leaks until collected.
    with conn.execute(stmt.execution_options(yield_per=50)) as result:
        for row in result:
            used += _size(row)
            if used > max_bytes:
                raise TooLarge(max_bytes, len(rows) + 1)
            rows.append(row)
    return rows


def _size(row: TaskRow) -> int:
    """Roughly the bytes a task adds to an answer: its texts and structured fields."""
    texts = len(row.result) + len(row.error) + len(row.command)
    return texts + len(orjson.dumps([row.params, row.data], option=orjson.OPT_NON_STR_KEYS))


def delete_tasks(conn: Connection, conditions: Any, everything: bool = False) -> int:
    """Delete what the same query selects, never an unfinished task; returns how many were deleted.

    No conditions select every finished task; a forgotten or emptied list must not do that, so it takes
    `everything` (JSON-RPC `"all": true`). With conditions, `everything` changes nothing."""
    if isinstance(conditions, list) and not conditions and not everything:
        raise BadRequest(
            'conditions: none given, which would delete every finished task; give conditions, or "all": true '
            "to delete them all"
        )
    filters, limit = parse_conditions(conditions)
    filters.append(T.c.status.not_in([PENDING, RUNNING]))
    stmt = select(T.c.id).where(*filters).order_by(T.c.created_at.desc(), T.c.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    ids = list(conn.execute(stmt).scalars())
    for chunk in in_batches(ids):
        conn.execute(delete(L).where(L.c.task_id.in_(chunk)))
        conn.execute(delete(T).where(T.c.id.in_(chunk)))
    return len(ids)
