"""`python`: `command` is a script, written to a temp file in the workdir and run by python3 -u."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from executors.base import RunContext
from executors.process import ProcessExecutor, optional_text
from wire.tasks import Assignment, TaskRequest


class PythonExecutor(ProcessExecutor):
    type = "python"

    def check(self, req: TaskRequest) -> None:
        self.require_command(req)
        optional_text(req.params, "python")

    @contextmanager
    def argv(self, task: Assignment, ctx: RunContext) -> Iterator[list[str]]:
        # A real file (not -c) so tracebacks name it and the script may read its own stdin.
        fd, name = tempfile.mkstemp(prefix=f"{task.id}-", suffix=".py", dir=ctx.workdir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(task.command)
            # -u: unbuffered, so print() lines reach the log as they happen.
            yield [str(task.params.get("python") or "python3"), "-u", name]
        finally:
            Path(name).unlink(missing_ok=True)
