"""`shell`: `command` through `/bin/sh -c` (or `params.shell`, e.g. bash)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from executors.base import RunContext
from executors.process import ProcessExecutor, optional_text
from wire.tasks import Assignment, TaskRequest


class ShellExecutor(ProcessExecutor):
    type = "shell"

    def check(self, req: TaskRequest) -> None:
        self.require_command(req)
        optional_text(req.params, "shell")

    @contextmanager
    def argv(self, task: Assignment, ctx: RunContext) -> Iterator[list[str]]:
        yield [str(task.params.get("shell") or "/bin/sh"), "-c", task.command]
