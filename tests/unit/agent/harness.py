"""Helpers for the agent's unit tests: an assignment, log lines, a task-like process group, and a fake
cloud at the HTTP boundary that keeps the log protocol's rules (DESIGN §3)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.client import CloudUnavailable, Rejected
from executors.procs import group_running
from wire.tasks import Assignment, LogLine, LogStream, TaskReport


def assignment(task_id: str = "task-7", attempt: int = 2, **fields: object) -> Assignment:
    """An attempt of a shell task, as a claim hands it out."""
    values: dict[str, object] = {
        "id": task_id,
        "type": "shell",
        "command": "true",
        "params": {"password": "s3cret"},
        "file_id": "",
        "env": {},
        "exec_timeout": 60,
        "attempt": attempt,
        "task_token": "tok-7",
        "max_log_bytes": 1024,
    }
    return Assignment.model_validate(values | fields)


def lines(n: int, first: int = 1) -> list[LogLine]:
    """`n` stdout lines numbered from `first`."""
    return [
        LogLine(seq=i, stream=LogStream.stdout, message=f"line {i} ünïcode \udcff") for i in range(first, first + n)
    ]


def spawn_group(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A process group like a task's: a shell leader with a child, in a session of its own."""
    return subprocess.Popen(["/bin/sh", "-c", "sleep 300; echo never"], start_new_session=True, cwd=tmp_path)


def wait_gone(pgid: int) -> bool:
    """Whether the process group is gone within 30 s."""
    end = time.monotonic() + 30
    while group_running(pgid) and time.monotonic() < end:
        time.sleep(0.02)
    return not group_running(pgid)


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait for the shipper's background task to get somewhere (a loaded machine may take a while)."""
    end = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


def expanded(lines: list[LogLine]) -> list[LogLine]:
    """Runs (a LogLine with `more`) as the single lines they stand for, as the cloud stores them."""
    return [
        LogLine(seq=ln.seq + i, stream=ln.stream, level=ln.level, message=m, ts=ln.ts)
        for ln in lines
        for i, m in enumerate(ln.messages())
    ]


@dataclass
class FakeCloud:
    """Stands in for CloudClient's log and result calls: a repeated seq is ignored, a gap is refused with
    409 and the next expected seq, a result is refused while its log is incomplete."""

    held: list[LogLine] = field(default_factory=list)
    results: list[TaskReport] = field(default_factory=list)
    batches: list[list[int]] = field(default_factory=list)
    """The seqs of every batch posted, in order (result lines included)."""
    forget_next: int = 0
    """Batches to acknowledge and then lose (a cloud crash with `synchronous_commit=off` for log rows)."""
    unavailable: int = 0
    """Calls to answer with CloudUnavailable before serving again."""
    refuse: Rejected | None = None
    """A refusal without a resend, for every call."""
    calls: int = 0
    """Log and result posts received, refused ones included."""

    @property
    def next_seq(self) -> int:
        return len(self.held) + 1

    def _take(self, batch: list[LogLine]) -> int:
        """Store a batch as the cloud does; the next seq it expects (as it believes)."""
        self.calls += 1
        if self.unavailable:
            self.unavailable -= 1
            raise CloudUnavailable("connection refused")
        if self.refuse is not None:
            raise self.refuse
        batch = expanded(batch)
        self.batches.append([ln.seq for ln in batch])
        if self.forget_next and batch:
            self.forget_next -= 1
            return max(self.next_seq, batch[-1].seq + 1)
        for ln in batch:
            if ln.seq > self.next_seq:
                raise Rejected(409, f"log gap: expected seq {self.next_seq}", self.next_seq)
            if ln.seq == self.next_seq:
                self.held.append(ln)
        return self.next_seq

    async def post_logs(self, task_id: str, token: str, batch: list[LogLine]) -> int:
        """Store a batch; the next expected seq."""
        return self._take(batch)

    async def post_result(self, task_id: str, report: TaskReport) -> None:
        """Accept the result once the cloud holds all its lines."""
        self._take(report.lines)
        if len(self.held) < report.log_lines:
            raise Rejected(409, "log incomplete", self.next_seq)
        self.results.append(report)
