"""`execute`: `params.cmd` with `params.args`, run directly (no shell, so nothing is interpreted)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from executors.base import RunContext
from executors.process import ProcessExecutor
from wire.tasks import Assignment, TaskRequest


class ExecuteExecutor(ProcessExecutor):
    type = "execute"

    def check(self, req: TaskRequest) -> None:
        cmd = req.params.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            raise ValueError("params.cmd: is required and must be a non-empty string")
        args = req.params.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("params.args: must be a list of strings")

    @contextmanager
    def argv(self, task: Assignment, ctx: RunContext) -> Iterator[list[str]]:
        yield [task.params["cmd"], *task.params.get("args", [])]
