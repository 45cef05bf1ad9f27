"""web_shell sessions: which task a relay socket may join, for the agent running it and for a browser."""

from __future__ import annotations

import secrets

from sqlalchemy import Connection

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


def _shell_task(conn: Connection, task_id: str) -> TaskRow:
    task = get_task(conn, task_id)
    if task.type != SHELL_TYPE:
        raise Conflict(f"{format_task_id(task.id)} is a {task.type} task; only {SHELL_TYPE} tasks have a shell")
    return task
