"""The `web_shell` type (seed 000): an interactive shell on a PTY, bridged over a WebSocket to a browser.

The agent connects out (it has no listening port): to the cloud's relay for this task by default, with its
own token and the attempt's task token, or to `params.url` with no credential of its own. Binary messages
carry bytes both ways; a text message from the far side is a control (`{"type": "resize", "cols": 120,
"rows": 40}`, `{"type": "input", "data": "ls\\n"}`) or, when it is not one, typed text. The session ends
when the shell exits, nothing passes either way for `params.idle_timeout` seconds, the task is canceled
or reaches its execution limit, or the far side closes (the browser left). What the screen showed is the
task's log (executors/transcript.py). docs/web-shell.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from executors.base import BaseExecutor, Outcome, RunContext, Stopped, until_stopped
from executors.pty_session import PtyShell
from executors.transcript import Transcript
from executors.web_shell_params import MAX_TERMINAL_SIDE, WebShellParams
from wire.tasks import Assignment, LogLevel, LogStream, TaskStatus

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("tiangong.agent")

CONNECT_TIMEOUT_S = 15.0
MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest message taken from the far side (the cloud's relay caps browser messages lower)."""
CLOSE_IDLE = 4008
"""Close code of an idle session (the relay passes it on to the browser); 4xxx are the application's."""
CLOSE_STOPPED = 4009
"""Close code of a session ended by a cancel or the task's execution limit."""


@dataclass
class _End:
    """How a session ended: the task's outcome and the close (code, reason) the far side is told."""

    outcome: Outcome
    code: int = 1000
    reason: str = ""


class WebShellExecutor(BaseExecutor):
    """A PTY running the agent user's shell, bridged to a WebSocket."""

    type = "web_shell"
    params_model = WebShellParams
    default_exec_timeout = 3600

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        """Connect, start the shell, bridge until one side ends, hang the shell up."""
        import aiohttp  # the agent's HTTP client; never imported when the cloud validates a request

        params: WebShellParams = self.parse_params(task.params)
        try:
            cwd = _working_dir(params, ctx)
            url, headers = _target(task, params, ctx)
        except (ValueError, RuntimeError) as exc:
            return Outcome(TaskStatus.failed, error=str(exc))
        async with aiohttp.ClientSession() as http:
            try:
                ws = await until_stopped(ctx, _connect(http, url, headers))
            except Stopped as stop:
                return Outcome(stop.status, error=f"{stop.reason} while connecting to the terminal's WebSocket")
            except (aiohttp.ClientError, TimeoutError) as exc:
                shown = url.split("?", 1)[0]
                return Outcome(TaskStatus.failed, error=f"cannot connect to {shown}: {type(exc).__name__}: {exc}")
            async with ws:
                try:
                    shell = await PtyShell.start(_argv(params), cwd, _env(task), params.cols, params.rows)
                except OSError as exc:
                    await ws.close(code=1011, message=b"the shell could not start")
                    return Outcome(TaskStatus.failed, error=f"cannot start {_argv(params)[0]!r}: {exc.strerror}")
                ctx.process_started(shell.pid)
                ctx.log(f"shell {shell.pid} started on a {params.cols}x{params.rows} terminal", LogStream.system)
                try:
                    end = await _Bridge(ws, shell, ctx, params).run()
                finally:  # also when the run itself is canceled (the agent's overrun limit, a shutdown)
                    await shell.close(params.kill_grace_s)
                if not ws.closed:
                    with contextlib.suppress(Exception):
                        await ws.close(code=end.code, message=end.reason.encode()[:120])
        return end.outcome


class _Bridge:
    """Bytes both ways between one shell and one WebSocket, until the first end condition."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, shell: PtyShell, ctx: RunContext, params: WebShellParams):
        self.ws, self.shell, self.ctx, self.params = ws, shell, ctx, params
        self.transcript = Transcript(ctx.log_lines)
        self.last_activity = asyncio.get_running_loop().time()

    async def run(self) -> _End:
        jobs = {
            asyncio.create_task(self._output()),
            asyncio.create_task(self._input()),
            asyncio.create_task(self._exited()),
            asyncio.create_task(self._idle()),
        }
        try:
            done = await until_stopped(self.ctx, _first(jobs))
        except Stopped as stop:
            end = self._stopped(stop)
        else:
            end = done
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        self.transcript.close()
        return end

    def _stopped(self, stop: Stopped) -> _End:
        if stop.reason == "canceled":
            return _End(Outcome(TaskStatus.canceled, error="canceled"), CLOSE_STOPPED, "the task was canceled")
        limit = "the session reached the task's execution limit"
        return _End(Outcome(TaskStatus.timeout, error=limit), CLOSE_STOPPED, limit)

    async def _output(self) -> _End:
        """Terminal -> far side (and the transcript)."""
        while True:
            data = await self.shell.read()
            if not data:  # nothing holds the terminal open any more: the shell has gone
                return await self._exited()
            try:
                await self._show(data)
            except (ConnectionError, RuntimeError, OSError) as exc:
                # The far side is closing (the browser left while the shell was still printing): the
                # close frame, which _input reads, says how the session ended; this send is no failure.
                log.debug("web shell: output not sent, the WebSocket is closing (%s)", exc)
                await asyncio.Future()  # never done: _input (or the shell's exit) ends the session

    async def _show(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        self.transcript.feed(data)
        await self.ws.send_bytes(data)

    async def _exited(self) -> _End:
        code = await self.shell.proc.wait()
        rest = self.shell.read_now()
        if rest:
            with contextlib.suppress(Exception):
                await self._show(rest)
        message = f"the shell exited with code {code}"
        status = TaskStatus.success if code == 0 else TaskStatus.failed
        return _End(Outcome(status, exit_code=code, result=message, error="" if code == 0 else message), 1000, message)

    async def _input(self) -> _End:
        """Far side -> terminal: typed bytes, or a resize."""
        import aiohttp

        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                await self._type(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                await self._control(msg.data)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                error = f"the terminal's WebSocket failed: {self.ws.exception()}"
                return _End(Outcome(TaskStatus.failed, error=error), 1011, "error")
            else:  # CLOSE (its extra is the reason the far side gave), CLOSING, CLOSED
                reason = msg.extra if msg.type is aiohttp.WSMsgType.CLOSE and isinstance(msg.extra, str) else ""
                return self._closed_by_far_side(reason)

    def _closed_by_far_side(self, reason: str) -> _End:
        code = self.ws.close_code
        reason = reason or "the other side closed the connection"
        text = f"the session ended: {reason}"
        self.ctx.log(text, LogStream.system)
        if code == CLOSE_IDLE:
            return _End(Outcome(TaskStatus.timeout, error=text), code, reason)
        if code in (1000, 1001, 4000):  # normal, going away (a browser tab closed), the relay's "browser left"
            return _End(Outcome(TaskStatus.success, result=text), 1000, reason)
        return _End(Outcome(TaskStatus.failed, error=f"{text} (close code {code})"), 1000, reason)

    async def _type(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        await self.shell.write(data)

    async def _control(self, text: str) -> None:
        message = _as_control(text)
        if message is None:
            await self._type(text.encode())
        elif message["type"] == "input":
            await self._type(str(message["data"]).encode())
        else:
            cols, rows = message["cols"], message["rows"]
            self.shell.resize(cols, rows)

    async def _idle(self) -> _End:
        loop = asyncio.get_running_loop()
        limit = self.params.idle_timeout
        # Sleep until the idle limit counted from the last byte; a byte meanwhile moves the limit on.
        while (left := self.last_activity + limit - loop.time()) > 0:  # noqa: ASYNC110 (a deadline, no event)
            await asyncio.sleep(left)
        text = f"idle for {limit} s (params.idle_timeout)"
        self.ctx.log(f"the session ended: {text}", LogStream.system, LogLevel.warn)
        return _End(Outcome(TaskStatus.timeout, error=text), CLOSE_IDLE, text)


async def _first(jobs: set[asyncio.Task[_End]]) -> _End:
    done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
    return next(iter(done)).result()


def _as_control(text: str) -> dict[str, Any] | None:
    """A valid control message, or None when `text` is typed text."""
    if not text.startswith("{"):
        return None
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("type") == "input" and isinstance(message.get("data"), str):
        return message
    if message.get("type") == "resize" and all(_side(message.get(k)) for k in ("cols", "rows")):
        return message
    return None


def _side(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TERMINAL_SIDE


async def _connect(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> aiohttp.ClientWebSocketResponse:
    import aiohttp

    # The heartbeat notices a dead relay or browser within a minute even when nobody types.
    timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5)
    return await http.ws_connect(url, headers=headers, heartbeat=30, max_msg_size=MAX_MESSAGE_BYTES, timeout=timeout)


def _target(task: Assignment, params: WebShellParams, ctx: RunContext) -> tuple[str, dict[str, str]]:
    """Where to connect and with which headers: the cloud's relay (agent token, task token) or params.url
    (no credential of the agent's: the task's creator chose that server)."""
    headers = {"X-Tiangong-Task": task.id}
    if params.terminal_id:
        headers["X-Terminal-Id"] = params.terminal_id
    if params.url:
        return params.url, headers
    url, auth = ctx.cloud_route(f"/api/v1/agent/tasks/{task.id}/shell")
    return url, {**headers, **auth, "X-Task-Token": task.task_token}


def _working_dir(params: WebShellParams, ctx: RunContext) -> Path:
    path = Path(ctx.workdir) / params.cwd if params.cwd else Path(ctx.workdir)
    if not path.is_dir():
        raise ValueError(f"{'params.cwd' if params.cwd else 'working directory'}: directory {path} does not exist")
    return path


def _argv(params: WebShellParams) -> list[str]:
    if params.shell:
        return [params.shell]
    return ["/bin/bash"] if os.path.exists("/bin/bash") else ["/bin/sh"]


def _env(task: Assignment) -> dict[str, str]:
    # The agent's own TIANGONG_* settings (its token among them) are not the shell's business.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TIANGONG_")}
    ids = {"TIANGONG_TASK_ID": task.id, "TIANGONG_TASK_ATTEMPT": str(task.attempt)}
    return {**inherited, "TERM": "xterm-256color", **task.env, **ids}
