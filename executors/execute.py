"""The `execute` task type: `params.cmd` with `params.args`, started directly with no shell."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from executors.base import RunContext
from executors.process import ProcessExecutor
from wire.tasks import Assignment, TaskRequest


class ExecuteExecutor(ProcessExecutor):
    """Runs one program with literal arguments: no shell, so no quoting or expansion."""

    type = "execute"

    def check(self, req: TaskRequest) -> None:
        """`params.cmd` is required; `params.args` is a list of strings."""
        cmd = req.params.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            raise ValueError("params.cmd: is required and must be a non-empty string")
        args = req.params.get("args")
        if args is not None and not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
            raise ValueError("params.args: must be a list of strings")

    def argv(self, task: Assignment, ctx: RunContext) -> AbstractContextManager[list[str]]:
        """`[cmd, *args]`."""
        return nullcontext([task.params["cmd"], *(task.params.get("args") or [])])
