"""Task type name -> executor class: the built-ins in one map, third parties by entry point."""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from executors.base import DEFAULT_EXEC_TIMEOUT, Executor
from wire.tasks import TaskRequest

ENTRY_POINT_GROUP = "tiangong.executors"

BUILTINS: dict[str, str] = {
    "shell": "executors.shell:ShellExecutor",
    "python": "executors.python:PythonExecutor",
    "execute": "executors.execute:ExecuteExecutor",
    "file": "executors.file:FileExecutor",
    "api": "executors.http:ApiExecutor",
    "http_request": "executors.http:HttpRequestExecutor",
    "ping": "executors.ping:PingExecutor",
    "mysql": "executors.db.mysql:MySqlExecutor",
    "doris": "executors.db.mysql:DorisExecutor",
    "postgres": "executors.db.postgres:PostgresExecutor",
    "clickhouse": "executors.db.clickhouse:ClickHouseExecutor",
    "mongo": "executors.db.mongo:MongoExecutor",
    "elasticsearch": "executors.db.search:SearchExecutor",
    "k8s": "executors.k8s:KubernetesExecutor",
}


class UnknownTaskType(ValueError):
    """Raised for a type no executor is registered for; the message lists the known ones."""


@cache
def _targets() -> dict[str, str]:
    found = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def known_types() -> list[str]:
    """Every registered type name, sorted."""
    return sorted(_targets())


@cache
def get_executor(type_name: str) -> Executor:
    """The executor instance for `type_name`; raises UnknownTaskType listing the known types."""
    target = _targets().get(type_name)
    if target is None:
        raise UnknownTaskType(f"type: unknown task type {type_name!r}; known types: {', '.join(known_types())}")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    executor: Executor = cls()
    return executor


def default_exec_timeout(req: TaskRequest) -> int:
    """The execution limit a task gets when it gives none: the executor's `exec_timeout_for(req)` if it has
    one (database types derive it from `exec_options.timeout_ms`), else its `default_exec_timeout`."""
    executor = get_executor(req.type)
    per_request = getattr(executor, "exec_timeout_for", None)
    if per_request is not None:
        return int(per_request(req))
    return int(getattr(executor, "default_exec_timeout", DEFAULT_EXEC_TIMEOUT))


def shown_command(type_name: str, command: str) -> str:
    """`command` as the API may show it: the executor's `shown_command(command)` if it has one (k8s masks
    a Secret's values), else as it is. A type no longer installed shows it as it is."""
    try:
        executor = get_executor(type_name)
    except UnknownTaskType:
        return command
    masker = getattr(executor, "shown_command", None)
    return command if masker is None else str(masker(command))
