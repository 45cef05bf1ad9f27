"""A shell on a pseudo-terminal: spawned as the leader of its own session with the PTY as its controlling
terminal (so Ctrl-C, job control and SIGWINCH work), read without blocking on the event loop, resized,
and hung up with its whole process group at the end."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from pathlib import Path

from executors.procs import group_running, proc_stat, signal_group

READ_BYTES = 16 * 1024
"""Most bytes one read of the terminal returns (one WebSocket message each)."""
KILL_WAIT_S = 5.0
POLL_S = 0.05


def _take_terminal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """In the child: a session of its own, with stdin (the PTY's far end) as controlling terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def set_size(fd: int, cols: int, rows: int) -> None:
    """TIOCSWINSZ: the kernel then sends SIGWINCH to the terminal's foreground process group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal `fd`."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return cols, rows


async def _ready(fd: int, *, write: bool) -> None:
    """Wait until `fd` can be read (or, with `write`, written) without blocking: the event loop watches it."""
    loop = asyncio.get_running_loop()
    watch, unwatch = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    ready: asyncio.Future[None] = loop.create_future()
    watch(fd, _wake, ready)
    try:
        await ready
    finally:
        unwatch(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class PtyShell:
    """One shell process on one PTY; we hold the controlling (master) end."""

    def __init__(self, master: int, proc: asyncio.subprocess.Process) -> None:
        self.master = master
        self.proc = proc
        self.pid = proc.pid  # a session leader: its pid is its process group id

    @classmethod
    async def start(cls, argv: list[str], cwd: Path, env: dict[str, str], cols: int, rows: int) -> PtyShell:
        """Spawn `argv` on a new PTY of `cols` x `rows`."""
        master, slave = os.openpty()
        try:
            set_size(slave, cols, rows)
            os.set_blocking(master, False)
            # preexec_fn rather than start_new_session: only the child can make the PTY its controlling
            # terminal (TIOCSCTTY), and the function makes no call that could wait on another thread's lock.
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, preexec_fn=_take_terminal
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # else our copy keeps the terminal open after the shell has gone
        return cls(master, proc)

    async def read(self) -> bytes:
        """The next bytes the terminal shows; b"" once no process has it open any more."""
        while True:
            try:
                return os.read(self.master, READ_BYTES)
            except BlockingIOError:
                pass
            except OSError:  # EIO: every process holding the far end has closed it (Linux)
                return b""
            await _ready(self.master, write=False)

    def read_now(self) -> bytes:
        """What the terminal holds right now without waiting (the last output of a shell that exited)."""
        chunks: list[bytes] = []
        while sum(len(c) for c in chunks) < 1024 * 1024:
            try:
                chunk = os.read(self.master, READ_BYTES)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    async def write(self, data: bytes) -> None:
        """Type `data` into the terminal; waits while its input queue is full (a huge paste)."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
                continue
            except BlockingIOError:
                pass
            await _ready(self.master, write=True)

    def resize(self, cols: int, rows: int) -> None:
        set_size(self.master, cols, rows)

    async def close(self, grace: float) -> None:
        """Hang up: SIGHUP (an interactive shell ignores SIGTERM) and SIGCONT to every process group of the
        shell's session (job control puts each job in a group of its own), closing our end; SIGKILL to what
        still runs after `grace` seconds."""
        await self._signal(signal.SIGHUP, signal.SIGCONT)  # a stopped job must wake up to take its hangup
        with contextlib.suppress(OSError):
            os.close(self.master)
        if not await self._gone(grace):
            await self._signal(signal.SIGKILL)
            await self._gone(KILL_WAIT_S)
        if self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), KILL_WAIT_S)

    async def _signal(self, *sigs: signal.Signals) -> None:
        # Scanning /proc reads a file per process on the machine: done in a thread, not on the event loop
        # that carries every other task's output.
        groups = await asyncio.to_thread(session_groups, self.pid)
        for sig in sigs:
            for group in groups | {self.pid}:
                signal_group(group, sig)

    def _running(self) -> bool:
        return group_running(self.pid) or bool(session_groups(self.pid))

    async def _gone(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while await asyncio.to_thread(self._running):
            if loop.time() >= end:
                return False
            await asyncio.sleep(POLL_S)
        return True


def session_groups(sid: int) -> set[int]:
    """The process groups with a live (not zombie) process in session `sid`: the shell's and its jobs'.
    A process that left the session (setsid, a daemon) is not found: as for the shell type, it outlives
    the task."""
    groups: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return groups
    session = str(sid).encode()
    for entry in entries:
        if entry.isdigit():
            fields = proc_stat(entry)  # state, ppid, pgrp, session, ...
            if fields is not None and len(fields) > 3 and fields[3] == session and fields[0] not in (b"Z", b"X"):
                groups.add(int(fields[2]))
    return groups
