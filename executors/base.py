"""The executor contract: validate a request (cloud, cheap) and run an assignment (agent).

Keep this additive-only: third-party executors registered through the `tiangong.executors`
entry-point group depend on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from wire.tasks import Assignment, LogLevel, LogStream, TaskRequest, TaskStatus


@dataclass
class Outcome:
    """How a task ended. `result` is the human-readable text, `data` the structured result."""

    status: TaskStatus
    exit_code: int | None = None
    result: str = ""
    data: Any = None
    error: str = ""


class RunContext(Protocol):
    """What the agent gives an executor while it runs one task."""

    task_id: str
    workdir: Path
    """A directory the task may use (its working directory unless params say otherwise)."""
    cancel_event: asyncio.Event
    """Set when the caller canceled the task or the agent is shutting down."""
    deadline: float
    """`asyncio.get_running_loop().time()` at which the execution limit is reached."""
    max_output_bytes: int
    """Cap for output kept per task (log and result each keep head and tail within it)."""
    connections: Mapping[str, Mapping[str, Any]]
    """Named connections from the agent's config file."""
    config: Mapping[str, Any]
    """The rest of the agent's config file: `goinception_url`, `kubeconfig`, `context`, `namespace`."""

    def log(self, message: str, stream: LogStream = LogStream.stdout, level: LogLevel | None = None) -> None:
        """Record one log line (no trailing newline); shipped to the cloud in batches."""
        ...

    async def fetch_file(self, file_id: str) -> Path:
        """Return a local path holding the uploaded file `file_id` (downloaded and verified if needed)."""
        ...

    def process_started(self, pid: int) -> None:
        """Call right after starting a process in its own process group (pid = group id): the agent
        records it, so that if the agent dies while the task runs, its next start kills the group."""
        ...


class Executor(Protocol):
    """One task type. `validate` runs in the cloud at POST time: no heavy imports, no I/O."""

    type: ClassVar[str]

    def validate(self, req: TaskRequest) -> None:
        """Raise ValueError naming the field, e.g. `params.cmd is required`."""
        ...

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        """Run the task to its end, honouring ctx.cancel_event and ctx.deadline."""
        ...


DEFAULT_EXEC_TIMEOUT = 1800
"""Execution limit in seconds for types that do not set `default_exec_timeout`."""
