"""web_shell sessions: which task a relay socket may join, for the agent running it and for a browser."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import Connection, select

from cloud.access import Principal
from cloud.db.models import AUDIT as AU
from cloud.services.errors import Conflict, Forbidden
from cloud.services.tasks import get_task
from cloud.services.transitions import TaskRow
from wire.tasks import TaskStatus, format_task_id

SHELL_TYPE = "web_shell"


def agent_side(conn: Connection, task_id: str, task_token: str, agent_id: str | None) -> TaskRow:
    """The running web_shell task the agent `agent_id` connects its terminal for, with the attempt's token;
    NotFound, Forbidden (another agent's task), or Conflict (stale token, not running, not a web_shell)."""
    task = _shell_task(conn, task_id)
    if agent_id is None or task.agent_id != agent_id:
        raise Forbidden(f"{format_task_id(task.id)} belongs to agent {task.agent_id!r}, not to this token's")
    if not task_token or not secrets.compare_digest(task.task_token or "", task_token):
        raise Conflict(f"X-Task-Token: stale or unknown task token for {format_task_id(task.id)}")
    if task.status != TaskStatus.running:
        raise Conflict(f"{format_task_id(task.id)} is {task.status}, not running")
    return task


def browser_side(conn: Connection, task_id: str) -> TaskRow:
    """The web_shell task a browser attaches to: pending (its agent has not claimed it yet) or running."""
    task = _shell_task(conn, task_id)
    if task.status not in (TaskStatus.pending, TaskStatus.running):
        raise Conflict(f"{format_task_id(task.id)} already ended ({task.status}); open a new shell")
    return task


CREATE_RECORD_WINDOW = timedelta(seconds=60)
"""How far from the task's created_at its `task.create` audit record is looked for: both are written in the
creating transaction, so seconds apart; the window lets the lookup use the audit log's index on `at`."""


def require_creator(conn: Connection, task: TaskRow, principal: Principal) -> None:
    """Forbidden unless `principal` created the shell task or is an admin token: a shell is its creator's
    session, and another token allowed web_shell on the agent must open its own.

    The creator is the token in the task's `task.create` audit record (tasks keep no creator column). No
    record (pruned after audit_retention_days) leaves the session to admin tokens: refused, never opened."""
    if principal.is_admin:
        return
    shown = format_task_id(task.id)
    details = conn.execute(
        select(AU.c.detail).where(
            AU.c.at.between(task.created_at - CREATE_RECORD_WINDOW, task.created_at + CREATE_RECORD_WINDOW),
            AU.c.action == "task.create",
            AU.c.target == shown,
        )
    ).scalars()
    mine = principal.credential_id is not None and any(
        isinstance(d, dict) and d.get("token") == f"token-{principal.credential_id}" for d in details
    )
    if not mine:
        raise Forbidden(
            f"{shown} is another token's shell session: only the token that created it, or an admin, may attach"
        )


def _shell_task(conn: Connection, task_id: str) -> TaskRow:
    task = get_task(conn, task_id)
    if task.type != SHELL_TYPE:
        raise Conflict(f"{format_task_id(task.id)} is a {task.type} task; only {SHELL_TYPE} tasks have a shell")
    return task
