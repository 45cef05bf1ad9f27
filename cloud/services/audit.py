"""The audit log: who (a token's name) created, canceled, retried or deleted what, and when; token and
agent changes. Written in the same transaction as the change it records."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, func, select

from cloud.access import Principal
from cloud.db.models import AUDIT as AU
from cloud.db.prepared import inserting
from cloud.db.types import utcnow

MAX_TARGET = 200
_INSERT = inserting(AU, frozenset({"at", "actor", "action", "target", "detail"}), returning=False)


def record(conn: Connection, actor: Principal, action: str, target: str = "", **detail: Any) -> None:
    """One audit record, e.g. `record(conn, principal, "task.create", "task-12", agent_id="web-1")`: the actor
    is the token's name, and its id (`detail.token`) since names need not be unique. `detail` must hold no
    secret: callers pass ids, names and types, never params."""
    if actor.credential_id is not None:
        detail["token"] = f"token-{actor.credential_id}"
    values = {"at": utcnow(), "actor": actor.name[:128], "action": action, "target": target[:MAX_TARGET]}
    _INSERT.execute(conn, {**values, "detail": detail})


def list_audit(
    conn: Connection,
    page: int,
    page_size: int,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
) -> tuple[list[Row[Any]], int]:
    """A page of records, newest first, and the total matching."""
    where = []
    if actor:
        where.append(AU.c.actor == actor)
    if action:
        # `task` matches every task.* action.
        where.append(AU.c.action.startswith(action + ".") | (AU.c.action == action))
    if target:
        where.append(AU.c.target == target)
    if since:
        where.append(AU.c.at >= since)
    total = conn.execute(select(func.count()).select_from(AU).where(*where)).scalar_one()
    rows = conn.execute(
        select(AU).where(*where).order_by(AU.c.id.desc()).limit(page_size).offset((page - 1) * page_size)
    ).all()
    return list(rows), int(total)


def prune(conn: Connection, keep_days: int) -> int:
    """Delete records older than `keep_days`; returns how many."""
    res = conn.execute(delete(AU).where(AU.c.at < utcnow() - timedelta(days=keep_days)))
    return int(res.rowcount)
