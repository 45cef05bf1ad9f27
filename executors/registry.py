"""Task type name -> executor class: the built-ins in one map, third parties by entry point."""

from __future__ import annotations

import importlib
from collections import OrderedDict
from functools import cache
from importlib.metadata import entry_points

from executors.base import DEFAULT_EXEC_TIMEOUT, Executor
from wire.secrets import mask_command
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


def shown_command(type_name: str, command: str, *, mysql: bool = False) -> str:
    """`command` as the API may show it: the executor's `shown_command(command)` if it has one (k8s masks
    a Secret's values; a type no longer installed has none), then secrets in command-line shapes masked
    (`--password=x`, URL passwords...: wire.secrets.mask_command; `mysql` says `-px` is a password).

    A long command is masked once and kept: a task is read far more often than it is created, and the
    k8s masker parses YAML (about a second per MB)."""
    if len(command) < _CACHE_FROM_CHARS:
        return _shown(type_name, command, mysql)
    return _SHOWN.get(type_name, command, mysql)


def _shown(type_name: str, command: str, mysql: bool) -> str:
    try:
        executor = get_executor(type_name)
    except UnknownTaskType:
        masker = None
    else:
        masker = getattr(executor, "shown_command", None)
    text = command if masker is None else str(masker(command))
    return mask_command(text, mysql=mysql)


_CACHE_FROM_CHARS = 4096
_CACHE_CHARS = 64 * 1024 * 1024


class _ShownCache:
    """Shown commands by (type, mysql, command); the least recently used go past _CACHE_CHARS in all."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, bool, str], str] = OrderedDict()
        self._chars = 0

    def get(self, type_name: str, command: str, mysql: bool) -> str:
        key = (type_name, mysql, command)
        shown = self._items.get(key)
        if shown is not None:
            self._items.move_to_end(key)
            return shown
        shown = self._items[key] = _shown(type_name, command, mysql)
        self._chars += len(command) + len(shown)
        while self._chars > _CACHE_CHARS and len(self._items) > 1:
            (_, _, old), old_shown = self._items.popitem(last=False)
            self._chars -= len(old) + len(old_shown)
        return shown


_SHOWN = _ShownCache()
