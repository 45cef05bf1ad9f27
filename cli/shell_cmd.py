"""`tiangong shell AGENT`: an interactive terminal on an agent (a `web_shell` task, docs/web-shell.md),
bridged to this terminal: raw mode while it lasts, resizes followed, the terminal restored at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Annotated, Any

import aiohttp
import orjson
import typer

from cli.api import DEFAULT_URL, Api, TokenOpt, UrlOpt, check_token, check_url
from cli.exitcodes import CliError, Code
from cli.output import note

READ_BYTES = 64 * 1024


def shell(
    agent_id: Annotated[str, typer.Argument(help="The agent to open a shell on.")],
    idle_timeout: Annotated[int, typer.Option(help="Seconds without input or output before it ends.")] = 600,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
) -> None:
    """Open an interactive shell on AGENT_ID (a web_shell task; its transcript is the task's log). Exit the
    shell (or Ctrl-D) to end it."""
    cols, rows = shutil.get_terminal_size((80, 24))
    params = {"idle_timeout": idle_timeout, "cols": cols, "rows": rows}
    with Api(url, token) as api:
        task = api.post("/api/v1/tasks", json={"agent_id": agent_id, "type": "web_shell", "params": params})
    note(f"{task['id']}: shell on {agent_id}; exit the shell to end it")
    ws_url = check_url(url).rstrip("/").replace("http", "ws", 1) + f"/api/v1/tasks/{task['id']}/shell"
    headers = {"Authorization": f"Bearer {check_token(token)}"}
    with _raw(sys.stdin.fileno()):
        code = asyncio.run(_bridge(ws_url, headers))
    note(f"{task['id']}: shell ended ({code})")


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """Raw mode when stdin is a terminal (keys go to the remote shell as typed, Ctrl-C included)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _bridge(ws_url: str, headers: dict[str, str]) -> str:
    """Copy stdin to the shell and the shell to stdout until either side ends; the close reason."""
    loop = asyncio.get_running_loop()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(ws_url, headers=headers, max_msg_size=0, heartbeat=30)
        except aiohttp.WSServerHandshakeError as exc:
            code = Code.AUTH if exc.status in (401, 403) else Code.REFUSED
            raise CliError(f"the cloud refused the shell: HTTP {exc.status} {exc.message}", code) from exc
        except aiohttp.ClientError as exc:
            raise CliError(f"cannot reach the cloud for the shell: {exc}", Code.UNREACHABLE) from exc

        # Keys (bytes) and resizes (a text control message) in the order they happened; b"" is stdin's end.
        typed: asyncio.Queue[bytes | str] = asyncio.Queue()

        def resized() -> None:
            cols, rows = shutil.get_terminal_size((80, 24))
            typed.put_nowait(orjson.dumps({"type": "resize", "cols": cols, "rows": rows}).decode())

        def readable() -> None:
            try:
                data = os.read(stdin, READ_BYTES)
            except OSError:
                data = b""
            typed.put_nowait(data)

        loop.add_reader(stdin, readable)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGWINCH, resized)

        async def upstream() -> None:
            while data := await typed.get():
                await (ws.send_str(data) if isinstance(data, str) else ws.send_bytes(data))
            await ws.close()  # stdin ended (a pipe): the far side ends the shell

        sender = asyncio.create_task(upstream())
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    os.write(stdout, msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    os.write(stdout, msg.data.encode())
        finally:
            loop.remove_reader(stdin)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return _reason(ws)


def _reason(ws: Any) -> str:
    extra = getattr(ws, "close_message", None) or ""
    return f"close code {ws.close_code}{': ' + extra if extra else ''}"
