"""`params` of the `web_shell` type: where the terminal is bridged to, its idle limit, shell and size."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ConfigDict, Field

from executors.process_params import ProcessParams, optional_text

DEFAULT_IDLE_TIMEOUT_S = 600
MAX_IDLE_TIMEOUT_S = 86400
MAX_TERMINAL_SIDE = 1000
"""Columns and rows are each 1..MAX_TERMINAL_SIDE (xterm.js and the kernel take far more; no screen does)."""


def _url(value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, str) or len(value) > 2048:
        raise ValueError("params.url: must be a ws://, wss://, http:// or https:// URL of at most 2048 characters")
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ValueError("params.url: must be a ws://, wss://, http:// or https:// URL with a host")
    return value


def _terminal_id(value: Any) -> Any:
    if value is None:
        return value
    try:
        return str(uuid.UUID(str(value))) if isinstance(value, str) else _bad_terminal_id()
    except ValueError:
        return _bad_terminal_id()


def _bad_terminal_id() -> str:
    raise ValueError("params.terminal_id: must be a UUID (seed 000: a random UUID naming the terminal)")


def _shell(value: Any) -> Any:
    optional_text({"shell": value}, "shell")
    return value


class WebShellParams(ProcessParams):
    """`web_shell`: an interactive shell on a PTY, bridged over a WebSocket (docs/web-shell.md)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt `idle_timout` is an error, not a silent default

    url: Annotated[str | None, BeforeValidator(_url)] = Field(
        None,
        description="WebSocket URL the agent connects the terminal to (seed 000); default: the cloud's relay "
        "for this task. The agent sends no credential of its own to a URL given here.",
    )
    terminal_id: Annotated[str | None, BeforeValidator(_terminal_id)] = Field(
        None, description="A UUID naming the terminal (seed 000), sent as the X-Terminal-Id header."
    )
    idle_timeout: int = Field(
        DEFAULT_IDLE_TIMEOUT_S,
        ge=1,
        le=MAX_IDLE_TIMEOUT_S,
        strict=True,
        description="Seconds with no byte either way after which the session ends (task status `timeout`).",
    )
    shell: Annotated[str | None, BeforeValidator(_shell)] = Field(
        None, description="The shell to run; default /bin/bash, or /bin/sh where there is no bash."
    )
    cols: int = Field(80, ge=1, le=MAX_TERMINAL_SIDE, strict=True, description="Initial terminal width.")
    rows: int = Field(24, ge=1, le=MAX_TERMINAL_SIDE, strict=True, description="Initial terminal height.")
