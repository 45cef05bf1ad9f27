"""Turning rows into API models; secrets in params, env and command are masked here, on the way out."""

from __future__ import annotations

from cloud.services.tasks import TaskRow
from executors.registry import shown_command
from wire.secrets import mask_secrets, mask_text
from wire.tasks import TaskRead, TaskStatus, format_task_id


def task_read(task: TaskRow, *, sync_timed_out: bool = False) -> TaskRead:
    """The public shape of a task."""
    return TaskRead(
        id=format_task_id(task.id),
        agent_id=task.agent_id,
        type=task.type,
        status=TaskStatus(task.status),
        command=mask_text(shown_command(task.type, task.command)),
        params=mask_secrets(task.params),
        file_id=task.file_id,
        env=mask_secrets(task.env),
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
