"""Task type name -> executor class: the built-ins in one map, third parties by entry point."""

from __future__ import annotations

import importlib
from collections import OrderedDict
from functools import cache
from importlib.metadata import entry_points

from executors.base import BaseExecutor, Executor
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
    "web_shell": "executors.web_shell:WebShellExecutor",
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
    executor: Executor = with_defaults(getattr(importlib.import_module(module_name), attr))()
    return executor


def with_defaults(cls: type) -> type:
    """`cls`, or for a class written against an older contract, a subclass taking every hook it lacks
    from BaseExecutor: its own members come first in the method resolution order."""
    if issubclass(cls, BaseExecutor):
        return cls
    return type(cls.__name__, (cls, BaseExecutor), {"__module__": cls.__module__, "__doc__": cls.__doc__})


def default_exec_timeout(req: TaskRequest) -> int:
    """The execution limit a task gets when it gives none: its executor's `exec_timeout_for(req)`
    (database types derive it from `exec_options.timeout_ms`, the others return `default_exec_timeout`)."""
    return int(get_executor(req.type).exec_timeout_for(req))


def shown_command(type_name: str, command: str, *, mysql: bool = False) -> str:
    """`command` as the API may show it: the executor's `shown_command(command)` (k8s masks a Secret's
    values; a type no longer installed shows it as is), then secrets in command-line shapes masked
    (`--password=x`, URL passwords...: wire.secrets.mask_command; `mysql` says `-px` is a password).

    A long command is masked once and kept: a task is read far more often than it is created, and the
    k8s masker parses YAML (about a second per MB)."""
    if len(command) < _CACHE_FROM_CHARS:
        return _shown(type_name, command, mysql)
    return _SHOWN.get(type_name, command, mysql)


def _shown(type_name: str, command: str, mysql: bool) -> str:
    try:
        text = str(get_executor(type_name).shown_command(command))
    except UnknownTaskType:
        text = command
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
