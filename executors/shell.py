"""The `shell` task type: `command` run by /bin/sh -c, or by `params.shell`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from executors.base import RunContext
from executors.process import ProcessExecutor
from executors.process_params import ShellParams
from wire.tasks import Assignment, TaskRequest


class ShellExecutor(ProcessExecutor):
    """Runs `command` through a shell in its own process group."""

    type = "shell"
    default_exec_timeout = 1800

    params_model = ShellParams

    def check(self, req: TaskRequest, params: ShellParams) -> None:
        """`command` is required; `params.shell` names the shell (e.g. bash)."""
        self.require_command(req)

    def argv(self, task: Assignment, ctx: RunContext) -> AbstractContextManager[list[str]]:
        """`<shell> -c <command>`."""
        return nullcontext([task.params.get("shell") or "/bin/sh", "-c", task.command])
