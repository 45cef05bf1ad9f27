"""web_shell when its run is canceled from outside (the agent's overrun limit, a shutdown): the shell it
started must not outlive the run."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

from executors.procs import proc_stat
from executors.registry import get_executor
from tests.unit.executors.harness import Harness, make_task


def _gone(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is None or fields[0] in (b"Z", b"X")


def test_a_canceled_run_hangs_its_shell_up(tmp_path: Path) -> None:
    async def main() -> int:
        async def far_side(ws: ServerConnection) -> None:
            await ws.wait_closed()  # a browser that never types

        async with serve(far_side, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            task = make_task(type="web_shell", url=f"ws://127.0.0.1:{port}/", kill_grace_s=1)
            ctx = Harness(workdir=tmp_path, deadline=asyncio.get_running_loop().time() + 60)
            started = asyncio.Event()
            ctx.on_line = lambda h, _: started.set() if h.process_groups else None  # "shell N started"
            run = asyncio.create_task(get_executor("web_shell").run(task, ctx))
            await asyncio.wait_for(started.wait(), 20)
            shell = ctx.process_groups[0]
            assert not _gone(shell)
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            return shell

    shell = asyncio.run(main())
    assert _gone(shell), "the shell outlived its canceled run"
