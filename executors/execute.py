"""The `execute` task type: `params.cmd` with `params.args`, started directly with no shell."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from executors.base import RunContext
from executors.process import ProcessExecutor
from executors.process_params import ExecuteParams
from wire.tasks import Assignment


class ExecuteExecutor(ProcessExecutor):
    """Runs one program with literal arguments: no shell, so no quoting or expansion."""

    type = "execute"

    params_model = ExecuteParams

    def argv(self, task: Assignment, ctx: RunContext) -> AbstractContextManager[list[str]]:
        """`[cmd, *args]`."""
        return nullcontext([task.params["cmd"], *(task.params.get("args") or [])])
