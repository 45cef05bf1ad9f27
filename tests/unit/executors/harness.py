"""An in-memory RunContext and helpers to run one executor directly, without cloud or agent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executors.base import Outcome
from executors.registry import get_executor
from wire.tasks import Assignment, LogLevel, LogStream


@dataclass
class Harness:
    """An in-memory RunContext: collects log lines, serves files from a dict."""

    workdir: Path
    deadline: float
    task_id: str = "task-1"
    max_output_bytes: int = 10 * 1024 * 1024
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    lines: list[tuple[LogStream, str]] = field(default_factory=list)
    process_groups: list[int] = field(default_factory=list)
    on_line: Callable[[Harness, str], None] | None = None

    def log(self, message: str, stream: LogStream = LogStream.stdout, level: LogLevel | None = None) -> None:
        self.lines.append((stream, message))
        if self.on_line is not None:
            self.on_line(self, message)

    def log_lines(self, messages: list[str], stream: LogStream = LogStream.stdout) -> None:
        for message in messages:
            self.log(message, stream)

    async def fetch_file(self, file_id: str) -> Path:
        try:
            return self.files[file_id]
        except KeyError:
            raise FileNotFoundError(f"no file {file_id!r} on this agent") from None

    def process_started(self, pid: int) -> None:
        self.process_groups.append(pid)

    def cloud_route(self, path: str) -> tuple[str, dict[str, str]]:
        raise RuntimeError("the test harness has no cloud: give web_shell tasks params.url")

    def stream(self, stream: LogStream) -> list[str]:
        return [message for s, message in self.lines if s is stream]


def cancel_when(event: threading.Event, timeout: float = 20) -> Callable[[Harness], None]:
    """A `setup` for a run: cancel the task once `event` is set (by a server thread that holds a request)."""

    def setup(h: Harness) -> None:
        loop = asyncio.get_running_loop()

        def wait() -> None:
            if event.wait(timeout):
                loop.call_soon_threadsafe(h.cancel_event.set)

        threading.Thread(target=wait, daemon=True).start()

    return setup


def make_task(
    command: str = "",
    *,
    type: str = "shell",
    file_id: str = "",
    env: dict[str, str] | None = None,
    exec_timeout: int = 30,
    **params: Any,
) -> Assignment:
    return Assignment(
        id="task-1",
        type=type,
        command=command,
        params=params,
        file_id=file_id,
        env=env or {},
        exec_timeout=exec_timeout,
        attempt=1,
        task_token="token",
        max_log_bytes=10 * 1024 * 1024,
    )


def run_task(
    task: Assignment, workdir: Path, *, timeout: float = 30.0, setup: Callable[[Harness], None] | None = None
) -> tuple[Outcome, Harness]:
    """Run `task` through its registered executor with a fresh harness whose deadline is `timeout` away."""

    async def main() -> tuple[Outcome, Harness]:
        ctx = Harness(workdir=workdir, deadline=asyncio.get_running_loop().time() + timeout)
        if setup is not None:
            setup(ctx)
        return await get_executor(task.type).run(task, ctx), ctx

    return asyncio.run(main())
