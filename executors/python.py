"""The `python` task type: `command` is a Python script, run unbuffered from a temporary file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from executors.base import RunContext
from executors.process import ProcessExecutor
from executors.process_params import PythonParams
from wire.tasks import Assignment, TaskRequest


class PythonExecutor(ProcessExecutor):
    """Writes `command` to a file in the workdir and runs it with `params.python` or python3."""

    type = "python"

    params_model = PythonParams

    def check(self, req: TaskRequest, params: PythonParams) -> None:
        """`command` is required; `params.python` names the interpreter."""
        self.require_command(req)

    @contextmanager
    def argv(self, task: Assignment, ctx: RunContext) -> Iterator[list[str]]:
        """`<python> -u <script>`; the script file exists only while the context is open."""
        fd, name = tempfile.mkstemp(prefix="tiangong-", suffix=".py", dir=ctx.workdir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as script:
                script.write(task.command)
            # -u: unbuffered, so print() lines reach the log as they happen.
            yield [task.params.get("python") or "python3", "-u", name]
        finally:
            Path(name).unlink(missing_ok=True)
