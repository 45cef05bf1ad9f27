"""Turning rows into the models and shapes that leave the cloud: REST's tasks, agents, tokens, files, log
lines and audit records, an agent's assignment, and JSON-RPC's (seed 000) task events. Services return
rows; routes (and the claim) turn them into what they send here, and nowhere else.

Secrets in a task's params, env and command are masked here, on the way out, by key name and
command-line shape, which is cheap. Its output (result, error, data, log lines) was masked once, when it
was stored (cloud.services.output).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from cloud.sealing import Sealer
from cloud.services.agents import is_online
from cloud.services.credentials import is_expired
from cloud.services.fleet import Tally, counts
from executors.registry import shown_command
from files.store import FileStore
from wire.agents import AgentRead, AgentStatus
from wire.credentials import AuditRead, Scope, TokenKind, TokenRead
from wire.files import FileRead, format_file_id
from wire.fleet import NOT_RUN, AgentSelector, FleetRead, FleetTarget
from wire.secrets import mask_secrets, mentions_mysql, secret_keys_of
from wire.tasks import Assignment, LogLevel, LogRead, LogStream, TaskRead, TaskStatus, format_task_id

if TYPE_CHECKING:
    from cloud.services.transitions import TaskRow


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
        parent_id=format_task_id(task.parent_id) if task.parent_id is not None else None,
        fleet=_fleet(task),
    )


def _fleet(task: TaskRow) -> FleetRead | None:
    """A fleet run's settings (and its outcome once ended), as every listing shows a parent."""
    spec = task.fleet
    if spec is None:
        return None
    data = task.data if isinstance(task.data, dict) else {}
    return FleetRead(
        selector=AgentSelector.model_validate(spec["selector"]),
        max_concurrency=spec["max_concurrency"],
        max_errors=spec["max_errors"],
        concurrency=spec["concurrency"],
        error_limit=spec["error_limit"],
        targets=len(spec["targets"]),
        outcome=data.get("outcome") if TaskStatus(task.status).is_final else None,
    )


def run_read(task: TaskRow, children: list[Any], count: Tally, *, sync_timed_out: bool = False) -> TaskRead:
    """A fleet run's parent with its aggregate: counts by status and each target's child (or `not_run`),
    in the order of its targets (the order they start in)."""
    read = task_read(task, sync_timed_out=sync_timed_out)
    assert read.fleet is not None
    by_agent = {c.agent_id: c for c in children}
    results = []
    for agent_id in task.fleet["targets"]:
        child = by_agent.get(agent_id)
        if child is None:
            results.append(FleetTarget(agent_id=agent_id, status=NOT_RUN))
            continue
        results.append(
            FleetTarget(
                agent_id=agent_id,
                task_id=format_task_id(child.id),
                status=child.status,
                exit_code=child.exit_code,
                error=child.error,
                started_at=child.started_at,
                finished_at=child.finished_at,
            )
        )
    read.fleet.counts = counts(count, len(results))
    read.fleet.results = results
    return read


def assignment(task: TaskRow, sealer: Sealer, max_log_bytes: int) -> Assignment:
    """A claimed task as its agent receives it: unsealed secrets and the attempt's token. Raises
    Unsealable or ValidationError when the row cannot be handed out."""
    return Assignment(
        id=format_task_id(task.id),
        type=task.type,
        command=task.command,
        params=sealer.unseal(task.params),
        file_id=task.file_id,
        env=sealer.unseal(task.env),
        exec_timeout=task.exec_timeout,
        attempt=task.attempts,
        task_token=task.task_token,
        max_log_bytes=max_log_bytes,
    )


def log_read(line: Any, task_id: int) -> LogRead:
    """A stored log line of task number `task_id`."""
    return LogRead(
        id=line.id,
        task_id=format_task_id(task_id),
        attempt=line.attempt,
        seq=line.seq,
        level=LogLevel(line.level),
        stream=LogStream(line.stream),
        message=line.message,
        timestamp=line.timestamp,
    )


def log_page_json(rows: list[Any], task_id: int) -> bytes:
    """Stored log lines of task number `task_id` (rows of `list_logs`) as the JSON array `list[LogRead]`
    would give."""
    return orjson.dumps(log_line_dicts(rows, task_id), option=orjson.OPT_UTC_Z)


def log_line_dicts(rows: list[Any], task_id: int) -> list[dict[str, Any]]:
    """Stored log lines of task number `task_id` (rows of `list_logs`, whose column order they unpack in)
    as the dicts a LogRead would dump to (GET .../logs and its SSE `log` events both show these): a LogRead
    per line, and even reading a Row's fields by name, made reading a long log cost more than storing it."""
    shown = format_task_id(task_id)
    return [
        {
            "id": id_,
            "task_id": shown,
            "attempt": attempt,
            "seq": seq,
            "level": level,
            "stream": stream,
            "message": message,
            "timestamp": timestamp,
        }
        for id_, attempt, seq, level, stream, message, timestamp in rows
    ]


def agent_read(agent: Any, offline_after: float) -> AgentRead:
    """An agent, with its status derived from the heartbeat age."""
    return AgentRead(
        id=agent.id,
        hostname=agent.hostname,
        labels=agent.labels,
        version=agent.version,
        executors=agent.executors,
        max_concurrency=agent.max_concurrency,
        status=AgentStatus.online if is_online(agent.last_seen_at, offline_after) else AgentStatus.offline,
        disabled=agent.disabled,
        last_seen_at=agent.last_seen_at,
        registered_at=agent.registered_at,
    )


def token_read(row: Any) -> TokenRead:
    """A token's record; never the token itself (only its hash is stored)."""
    return TokenRead(
        id=row.id,
        name=row.name,
        kind=TokenKind(row.kind),
        hint=row.hint,
        agent_id=row.agent_id,
        scope=Scope.model_validate(row.scope or {}),
        single_use=row.single_use,
        uses=row.uses,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        created_at=row.created_at,
        created_by=row.created_by,
        expired=is_expired(row),
    )


def file_read(row: Any, store: FileStore) -> FileRead:
    """A stored file's record, with where its bytes lie in `store`."""
    return FileRead(
        id=format_file_id(row.id),
        name=row.name,
        path=str(store.blob_path(row.md5)),
        size=row.size,
        content_type=row.content_type,
        md5=row.md5,
        sha256=row.sha256,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def audit_read(row: Any) -> AuditRead:
    """An audit record."""
    detail = row.detail or {}
    return AuditRead(id=row.id, at=row.at, actor=row.actor, action=row.action, target=row.target, detail=detail)


def rpc_event_response(row: TaskRow) -> dict[str, Any]:
    """Seed 000's TaskEventResponse. `task_token` identifies the attempt without revealing its fencing token."""
    return {
        "task_id": int(row.id),
        "agent_uuid": row.agent_id,
        "task_token": hashlib.sha256((row.task_token or "").encode()).hexdigest()[:16],
        "timestamp": _ms(row.created_at),
        "success": row.status == TaskStatus.success.value,
        "error_message": _error_message(row),
        "task_event_result": _event_result(row),
    }


def rpc_record(row: TaskRow) -> dict[str, Any]:
    """Seed 000's task_query record."""
    final = TaskStatus(row.status).is_final
    return {
        "cron_source": row.cron_source,
        "error_message": _error_message(row) if final else None,
        "success": row.status == TaskStatus.success.value,
        "task_event_result": _event_result(row) if final else None,
        "task_event_type": _event_type(row),
        "task_id": int(row.id),
        "timestamp": _ms(row.created_at),
        "uuid": row.agent_id,
    }


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000)


def _event_result(row: Any) -> dict[str, Any]:
    """`task_event_result` keyed by type: ping -> rtt in ms, process types -> stdout, else the data."""
    if row.type == "ping":
        return {"ping": (row.data or {}).get("rtt_ms")}
    if row.type in ("execute", "shell", "python"):
        return {row.type: row.result}
    return {row.type: row.data if row.data is not None else row.result}


def _event_type(row: Any) -> dict[str, Any]:
    """Seed 000's TaskEventType, masked exactly as REST shows the task."""
    command, params, _ = shown(row)
    if row.type == "ping":
        return {"ping": command}
    if row.type == "execute":
        return {"execute": {"cmd": params.get("cmd"), "args": params.get("args") or []}}
    if row.type == "http_request":
        return {"http_request": params}
    return {row.type: {"command": command, "params": params}}


def _error_message(row: Any) -> str | None:
    if row.status == TaskStatus.success.value:
        return None
    return row.error or row.status
