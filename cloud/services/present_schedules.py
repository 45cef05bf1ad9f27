"""Schedules turned into what leaves the cloud: REST's ScheduleRead and seed 001's list item. Their task
template is masked exactly as a task's params, env and command are (cloud.services.present.shown)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cloud.services.present import shown
from cloud.services.schedules import ScheduleRow
from wire.schedules import Missed, ScheduleRead, format_schedule_id
from wire.tasks import format_task_id


def shown_template(row: ScheduleRow) -> dict[str, Any]:
    """The schedule's task as the API shows it: sealed secrets and command-line secrets masked."""
    template = dict(row.template)
    task = SimpleNamespace(
        type=row.type,
        command=template.get("command", ""),
        params=template.get("params", {}),
        env=template.get("env", {}),
    )
    command, params, env = shown(task)
    return {**template, "command": command, "params": params, "env": env}


def schedule_read(row: ScheduleRow) -> ScheduleRead:
    """The public shape of a schedule."""
    return ScheduleRead(
        id=format_schedule_id(row.id),
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        missed=Missed(row.missed),
        enabled=row.enabled,
        agent_id=row.agent_id,
        type=row.type,
        task=shown_template(row),
        start_at=row.start_at,
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        last_task_id=format_task_id(row.last_task_id) if row.last_task_id is not None else None,
        last_error=row.last_error,
        runs=row.runs,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def seed_server_id(agent_id: str) -> int | str:
    """Seed 001's integer `server_id`: the agent id read as a number when it is one (as the compatibility
    route maps it), else the agent id itself."""
    return int(agent_id) if agent_id.isascii() and agent_id.isdigit() and len(agent_id) < 19 else agent_id


def seed_item(row: ScheduleRow) -> dict[str, Any]:
    """Seed 001's task list item: `status` 1 enabled / 0 disabled, `last_run` and `next_run`."""
    return {
        "id": row.id,
        "name": row.name,
        "command": shown_template(row)["command"],
        "server_id": seed_server_id(row.agent_id),
        "cron_expr": row.cron,
        "status": 1 if row.enabled else 0,
        "last_run": row.last_run_at,
        "next_run": row.next_run_at,
        "created_at": row.created_at,
    }
