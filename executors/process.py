"""Run one local process for a task: own process group, live line logs, capped result, clean stop."""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar

from executors.base import BaseExecutor, Outcome, ParamsModel, RunContext, Stopped, until_stopped
from executors.capture import HeadTail
from executors.process_params import ProcessParams
from executors.procs import group_running, kill_grace, signal_group
from wire.masker import Masker
from wire.output import storable
from wire.tasks import Assignment, LogLevel, LogStream, TaskRequest, TaskStatus

CHUNK = 1024 * 1024
"""Longest line logged as one (in characters); a longer line is logged in pieces of this size."""
READ_BYTES = 256 * 1024
"""Most read from a pipe at once: the lines of what one read returns are handled together (a read,
decode and mask per line was most of the agent's work on a chatty task)."""
EOF_WAIT_S = 1.0
"""How long to keep reading after the process exited, when a background child still holds the pipes."""
KILL_WAIT_S = 5.0
"""How long to wait for the group to stop running after SIGKILL."""
POLL_S = 0.05
STDERR_TAIL_LINES = 20
ERROR_LINE_CHARS = 500


class _Pipe:
    """A pipe whose write end goes to the child and whose read end we own, so we can always close it.

    Read by a callback of the event loop as data arrives (no transport, protocol and StreamReader between:
    with the child's exit watch below, asyncio's subprocess machinery was a sixth of the agent's CPU
    per task)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.done: asyncio.Future[None] | None = None
        """Resolved at EOF (or with the error that stopped the reading)."""

    def start(self, handle: Callable[[bytes], None]) -> None:
        """Call `handle` with each read, then once with b"" at EOF."""
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        loop.add_reader(self.read_fd, self._readable, handle)

    def _readable(self, handle: Callable[[bytes], None]) -> None:
        try:
            data = os.read(self.read_fd, READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # the pipe failed under us: what came so far is the output
        try:
            handle(data)
        except Exception as exc:
            self.stop_reading(exc)
            return
        if not data:
            self.stop_reading()

    def stop_reading(self, error: BaseException | None = None) -> None:
        """Stop at EOF, at an error, or when the run gives up waiting; `done` is resolved from here on."""
        if self.done is None or self.done.done():
            return  # never started, or stopped already (the reader is registered exactly while it is pending)
        asyncio.get_running_loop().remove_reader(self.read_fd)
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)

    def close_write_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_write_end()
        self.stop_reading()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


class _Child:
    """The started process: its pid, and its exit seen through a pidfd the event loop watches (the child is
    reaped as soon as it exits, also after the run has ended: no zombie is left)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int] = loop.create_future()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd (not Linux, or older than 5.3): a thread waits instead
            self._pidfd = -1
            waiting = loop.run_in_executor(None, popen.wait)
            waiting.add_done_callback(lambda f: self._exited(f.result()))
        else:
            loop.add_reader(self._pidfd, self._reap)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def _reap(self) -> None:
        code = self._popen.poll()
        if code is None:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._exited(code)

    def _exited(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)

    def exited(self) -> asyncio.Future[int]:
        """The exit code, as a future to wait on (canceling it leaves the exit watch alone)."""
        return asyncio.shield(self._exit)


def _exit_code(returncode: int | None) -> tuple[int | None, str]:
    """Shell-style exit code (128+N for signal N) and the signal's name, if any."""
    if returncode is None or returncode >= 0:
        return returncode, ""
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return 128 + number, name


class _ProcessRun:
    """One process of one task: spawning, reading both pipes, stopping, and the outcome."""

    def __init__(self, task: Assignment, ctx: RunContext, grace: float) -> None:
        self.task, self.ctx, self.grace = task, ctx, grace
        self.pipes = {LogStream.stdout: _Pipe(), LogStream.stderr: _Pipe()}
        self.sizes = dict.fromkeys(self.pipes, 0)
        self.result = HeadTail(ctx.max_output_bytes)
        # stderr is part of the result too (seed 002's TaskResult has stdout and stderr), within a quarter
        # of the cap: it travels in `data`, which the cloud keeps whole only while it fits the cap.
        self.errors = HeadTail(ctx.max_output_bytes // 4)
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        # Output is masked here, before it is cut (into CHUNK pieces, a head and tail, an error line):
        # a cut through a secret would leave part of it that no later masking could recognise.
        self.masker = Masker.for_task_later(task.params, task.env, task.command)
        self.carry = dict.fromkeys(self.pipes, "")
        self.partial = dict.fromkeys(self.pipes, "")
        """Text of a line not ended yet (no newline read so far), per stream."""
        self.proc: _Child | None = None
        self.stop_requested = False

    async def start(self, argv: list[str], cwd: Path, env: dict[bytes, bytes]) -> _Child:
        # In the loop's thread, as asyncio's own subprocess_exec does: vfork + exec returns once the child has
        # exec'd (an exec that fails raises here).
        popen = subprocess.Popen(  # noqa: ASYNC220
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.pipes[LogStream.stdout].write_fd,
            stderr=self.pipes[LogStream.stderr].write_fd,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.proc = _Child(popen)
        self.ctx.process_started(self.proc.pid)
        for stream, pipe in self.pipes.items():
            pipe.close_write_end()  # else our own copy would keep the pipe from ever reaching EOF
            pipe.start(self._reader(stream))
        return self.proc

    def _reader(self, stream: LogStream) -> Callable[[bytes], None]:
        # Incremental so that a character split across two reads is still decoded whole.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def handle(raw: bytes) -> None:
            self.sizes[stream] += len(raw)
            self._feed(decoder.decode(raw, final=not raw), stream, final=not raw)

        return handle

    def _feed(self, text: str, stream: LogStream, final: bool) -> None:
        """Log the complete lines `text` ends, keep the unfinished one for the next read (logging it in
        CHUNK pieces once it is that long), and log what is left at the end of the output."""
        buf = self.partial[stream] + text
        cut = buf.rfind("\n") + 1
        if cut:
            self._take_lines(buf[:cut], stream)
            buf = buf[cut:]
        while len(buf) >= CHUNK:
            self._take(buf[:CHUNK], stream)
            buf = buf[CHUNK:]
        if final and buf:
            self._take(buf, stream, final=True)
            buf = ""
        self.partial[stream] = buf

    def _masked(self, text: str, stream: LogStream, final: bool) -> str:
        """`text` (after what the last piece held back) with the task's secrets masked. A piece cut from
        a longer line keeps its last characters back for the next one, so that a secret the cut split in
        two is masked whole."""
        masked = storable(self.masker.text(self.carry[stream] + text))
        self.carry[stream] = ""
        if final or masked.endswith("\n") or not self.masker.holdback:
            return masked
        keep = self.masker.holdback
        self.carry[stream] = masked[-keep:]
        return masked[:-keep]

    def _take_lines(self, text: str, stream: LogStream) -> None:
        """Log whole lines (`text` ends with a newline), masked together."""
        messages = self._masked(text, stream, final=True)[:-1].split("\n")
        self.ctx.log_lines(messages, stream)
        add = (self.result if stream is LogStream.stdout else self.errors).add
        for message in messages:
            add(message + "\n")
        if stream is LogStream.stderr:
            self.stderr_tail.extend(m[-ERROR_LINE_CHARS:] for m in messages if m.strip())

    def _take(self, text: str, stream: LogStream, final: bool = False) -> None:
        piece = self._masked(text, stream, final)
        if not piece:
            return
        message = piece.removesuffix("\n")
        self.ctx.log(message, stream)
        if stream is LogStream.stdout:
            self.result.add(piece)
            return
        self.errors.add(piece)
        if message.strip():
            self.stderr_tail.append(message[-ERROR_LINE_CHARS:])

    async def supervise(self, proc: _Child) -> TaskStatus | None:
        """Wait for the exit, the cancel event or the deadline; None when the process exited."""
        try:
            await until_stopped(self.ctx, proc.exited())  # a future, not a coroutine: no task of its own
        except Stopped as stop:
            return stop.status
        return None

    async def stop(self, proc: _Child, reason: TaskStatus) -> None:
        """SIGTERM the whole group, SIGKILL it after the grace period, and wait until none of it runs."""
        self.stop_requested = True
        pgid = proc.pid
        what = "canceled" if reason is TaskStatus.canceled else self.timeout_error()
        signal_group(pgid, signal.SIGTERM)
        self.ctx.log(f"{what}; sent SIGTERM to process group {pgid}", LogStream.system, LogLevel.warn)
        if await self._wait_gone(proc, self.grace):
            return
        signal_group(pgid, signal.SIGKILL)
        self.ctx.log(
            f"process group {pgid} still running {self.grace:g} s after SIGTERM; sent SIGKILL",
            LogStream.system,
            LogLevel.warn,
        )
        if not await self._wait_gone(proc, KILL_WAIT_S):
            self.ctx.log(f"process group {pgid} survived SIGKILL", LogStream.system, LogLevel.error)

    async def _wait_gone(self, proc: _Child, timeout: float) -> bool:
        """Wait until the leader is reaped and no process of its group runs."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        try:
            await asyncio.wait_for(proc.exited(), timeout)
        except TimeoutError:
            return False
        while group_running(proc.pid):
            if loop.time() >= end:
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def drain(self) -> None:
        """Read to EOF, but give up after EOF_WAIT_S: a daemon left running may hold the pipes forever."""
        reading = [pipe.done for pipe in self.pipes.values() if pipe.done is not None]
        if not all(done.done() for done in reading):  # usually both are at EOF by the time the exit is seen
            await asyncio.wait(reading, timeout=EOF_WAIT_S)
        for stream, pipe in self.pipes.items():
            pipe.stop_reading()
            failed = pipe.done.exception() if pipe.done is not None else None
            if failed is not None:
                self.ctx.log(f"reading {stream.value} failed: {failed!r}", LogStream.system, LogLevel.error)
        for stream, held in self.carry.items():
            unfinished = self.partial[stream]
            if held or unfinished:  # a line cut short: what was held back, and what came after it
                self.partial[stream] = ""
                self._take(unfinished, stream, final=True)

    def timeout_error(self) -> str:
        return f"execution timed out after {self.task.exec_timeout} s"

    def outcome(self, proc: _Child, stopped: TaskStatus | None) -> Outcome:
        exit_code, signame = _exit_code(proc.returncode)
        data = {
            "exit_code": exit_code,
            "stdout_bytes": self.sizes[LogStream.stdout],
            "stderr_bytes": self.sizes[LogStream.stderr],
            "truncated": self.result.dropped_bytes > 0,
            "stderr": self.errors.text(),
            "stderr_truncated": self.errors.dropped_bytes > 0,
        }
        out = Outcome(TaskStatus.success, exit_code=exit_code, result=self.result.text(), data=data)
        if stopped is TaskStatus.canceled:
            out.status, out.error = stopped, "canceled"
        elif stopped is TaskStatus.timeout:
            out.status, out.error = stopped, self.timeout_error()
        elif exit_code != 0:
            out.status, out.error = TaskStatus.failed, self._failure(exit_code, signame)
        return out

    def _failure(self, exit_code: int | None, signame: str) -> str:
        error = f"exit code {exit_code}" + (f" (killed by {signame})" if signame else "")
        return f"{error}: {self.stderr_tail[-1]}" if self.stderr_tail else error

    def close(self) -> None:
        """Leave nothing behind, even when the run itself was canceled midway."""
        if self.proc is not None and (
            self.proc.returncode is None or (self.stop_requested and group_running(self.proc.pid))
        ):
            # A normal exit may leave daemons on purpose; a stop (cancel, timeout) that was itself cut
            # short must still take the whole group down.
            signal_group(self.proc.pid, signal.SIGKILL)
        # A child not exited yet is reaped by its _Child when it does (it was sent SIGKILL above).
        for pipe in self.pipes.values():
            pipe.close()


def _working_dir(task: Assignment, ctx: RunContext) -> Path:
    cwd = task.params.get("cwd")
    # A relative cwd is taken under the task's workdir; an absolute one replaces it.
    path = Path(ctx.workdir) / str(cwd) if cwd else Path(ctx.workdir)
    if not path.is_dir():
        field = "params.cwd" if cwd else "working directory"
        raise ValueError(f"{field}: directory {path} does not exist")
    return path


def _environment(own: dict[str, str]) -> dict[bytes, bytes]:
    """The agent's environment without its own TIANGONG_* settings (its token among them: not the task's
    business), then `own`. As bytes, what exec takes: a str copy is decoded here and encoded again by Popen."""
    env = {k: v for k, v in os.environb.items() if not k.startswith(b"TIANGONG_")}
    env.update((os.fsencode(k), os.fsencode(v)) for k, v in own.items())  # ValueError: cannot start
    return env


async def run_process(
    argv: list[str], task: Assignment, ctx: RunContext, *, extra_env: dict[str, str] | None = None
) -> Outcome:
    """Run `argv` for `task` to its end, its exit, the cancel event or the deadline."""
    try:
        cwd = _working_dir(task, ctx)
        grace = kill_grace(task.params)
    except ValueError as exc:
        return Outcome(TaskStatus.failed, error=str(exc))
    if ctx.cancel_event.is_set():
        return Outcome(TaskStatus.canceled, error="canceled")
    ids = {"TIANGONG_TASK_ID": task.id, "TIANGONG_TASK_ATTEMPT": str(task.attempt)}
    run = _ProcessRun(task, ctx, grace)
    try:
        try:
            proc = await run.start(argv, cwd, _environment({**task.env, **(extra_env or {}), **ids}))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return Outcome(TaskStatus.failed, error=f"cannot start {argv[0]!r}: {reason}")
        stopped = await run.supervise(proc)
        if stopped is not None:
            await run.stop(proc, stopped)
        await run.drain()
        return run.outcome(proc, stopped)
    finally:
        run.close()


class ProcessExecutor(BaseExecutor, ABC):
    """Validation and file handling shared by the types that run one local process."""

    params_model: ClassVar[ParamsModel] = ProcessParams

    def require_command(self, req: TaskRequest) -> None:
        """`command` must hold something to run."""
        if not req.command.strip():
            raise ValueError(f"command: must not be empty for {self.type} tasks")

    @abstractmethod
    def argv(self, task: Assignment, ctx: RunContext) -> AbstractContextManager[list[str]]:
        """The command line, valid inside the context (which may create and remove files)."""

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        """Fetch the task's file if it has one (as $TIANGONG_FILE), then run the command line."""
        extra_env: dict[str, str] = {}
        if task.file_id:
            try:
                extra_env["TIANGONG_FILE"] = str(await ctx.fetch_file(task.file_id))
            except Exception as exc:
                return Outcome(TaskStatus.failed, error=f"file_id: cannot fetch {task.file_id}: {exc}")
        try:
            with self.argv(task, ctx) as argv:
                return await run_process(argv, task, ctx, extra_env=extra_env)
        except OSError as exc:
            return Outcome(TaskStatus.failed, error=f"cannot prepare the {self.type} task: {exc}")
