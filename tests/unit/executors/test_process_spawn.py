"""Starting and reaping a task's process (executors.process): the exit is seen with or without a pidfd, and
a run cut short leaves no zombie behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from executors import process
from tests.unit.executors.harness import Harness, make_task
from wire.tasks import LogStream, TaskStatus


def _state(pid: int) -> str | None:
    """The process's state letter (Z for a zombie), or None once it is gone (reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def test_a_process_ends_with_its_output_and_exit_code(tmp_path: Path) -> None:
    async def main() -> tuple[Harness, process.Outcome]:
        ctx = Harness(workdir=tmp_path, deadline=asyncio.get_running_loop().time() + 30)
        out = await process.run_process(["sh", "-c", "echo out; echo err >&2; exit 3"], make_task("x"), ctx)
        return ctx, out

    ctx, out = asyncio.run(main())
    assert out.status is TaskStatus.failed and out.exit_code == 3 and out.result == "out\n"
    assert ctx.stream(LogStream.stdout) == ["out"] and ctx.stream(LogStream.stderr) == ["err"]
    [pid] = ctx.process_groups
    assert _state(pid) is None  # reaped


def test_without_a_pidfd_the_exit_is_still_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where os.pidfd_open is missing or refused (not Linux, a kernel before 5.3), a thread waits instead."""

    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused)

    async def main() -> process.Outcome:
        ctx = Harness(workdir=tmp_path, deadline=asyncio.get_running_loop().time() + 30)
        return await process.run_process(["sh", "-c", "echo fallback"], make_task("x"), ctx)

    out = asyncio.run(asyncio.wait_for(main(), 10))
    assert out.status is TaskStatus.success and out.result == "fallback\n"


def test_a_run_canceled_midway_kills_the_process_and_reaps_it(tmp_path: Path) -> None:
    """The agent canceling the run itself (not the task: e.g. a shutdown past its grace): the process gets
    SIGKILL and is reaped when it dies, so no zombie stays in the agent's process table."""

    async def main() -> tuple[int, list[str | None]]:
        ctx = Harness(workdir=tmp_path, deadline=asyncio.get_running_loop().time() + 30)
        run = asyncio.create_task(process.run_process(["sleep", "30"], make_task("x"), ctx))
        for _ in range(500):  # until the process has started
            if ctx.process_groups:
                break
            await asyncio.sleep(0.01)
        [pid] = ctx.process_groups
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        states = []
        for _ in range(200):  # the loop runs: the exit watch reaps the child as it dies
            states.append(_state(pid))
            if states[-1] is None:
                break
            await asyncio.sleep(0.01)
        return pid, states

    pid, states = asyncio.run(main())
    assert states[-1] is None, f"process {pid} not reaped: states {states[-5:]}"
