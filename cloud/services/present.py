"""Turning rows into API models; secrets in params, env and command are masked here, on the way out.

Only the task's input is masked on a read, by key name and command-line shape, which is cheap. Its
output (result, error, data, log lines) was masked once, when it was stored (cloud.services.output).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cloud.services.tasks import TaskRow
from executors.registry import shown_command
from wire.secrets import mask_secrets, mentions_mysql, secret_keys_of
from wire.tasks import TaskRead, TaskStatus, format_task_id


class Shown(NamedTuple):
    command: str
    params: dict[str, Any]
    env: dict[str, Any]


def shown(task: Any) -> Shown:
    """A task's command, params and env as every API shows them (REST and JSON-RPC alike)."""
    keys = secret_keys_of(task.params)
    mysql = mentions_mysql(task.command, task.params)
    return Shown(
        shown_command(task.type, task.command, mysql=mysql),
        mask_secrets(task.params, keys, mysql=mysql),
        mask_secrets(task.env, keys, mysql=mysql),
    )


def task_read(task: TaskRow, *, sync_timed_out: bool = False) -> TaskRead:
    """The public shape of a task."""
    command, params, env = shown(task)
    return TaskRead(
        id=format_task_id(task.id),
        agent_id=task.agent_id,
        type=task.type,
        status=TaskStatus(task.status),
        command=command,
        params=params,
        file_id=task.file_id,
        env=env,
        result=task.result,
        data=task.data,
        exit_code=task.exit_code,
        error=task.error,
        attempts=task.attempts,
        max_retries=task.max_retries,
        retries=task.retries,
        retry_backoff=task.retry_backoff,
        retry_on=task.retry_on,
        next_retry_at=task.next_retry_at,
        expires_at=task.expires_at,
        last_error=task.last_error,
        request_id=task.request_id,
        cron_source=task.cron_source,
        exec_timeout=task.exec_timeout,
        started_at=task.started_at,
        finished_at=task.finished_at,
        created_at=task.created_at,
        updated_at=task.updated_at,
        sync_timed_out=sync_timed_out,
    )
