"""What `task run`, `task fleet` and `schedules create` send: params from inline JSON, a file (`@p.json`) or
stdin (`-`); env from K=V pairs. The options themselves too, so the three commands spell them alike."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.exitcodes import CliError, Code

ParamsOpt = Annotated[
    str | None, typer.Option("--params", "-p", help="Params: a JSON object, @file.json, or - for stdin.")
]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE for the process; repeatable.")]


def read_params(text: str) -> dict[str, Any]:
    """`{"a": 1}`, `@params.json` or `-` (stdin) -> a JSON object; a usage error naming the problem."""
    source = "--params"
    if text == "-":
        source, text = "--params - (stdin)", sys.stdin.read()
    elif text.startswith("@"):
        path = Path(text[1:]).expanduser()
        source = f"--params {text}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(
                f"{source}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}", Code.USAGE
            ) from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{source}: not JSON: {exc}", Code.USAGE) from exc
    if not isinstance(value, dict):
        raise CliError(f"{source}: expected a JSON object, got {type(value).__name__}", Code.USAGE)
    return value


def read_env(pairs: list[str] | None) -> dict[str, str]:
    """`["K=V", "X=a=b"]` -> `{"K": "V", "X": "a=b"}`; a usage error for an entry without `=` or a name."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--env: expected NAME=VALUE, got {pair!r}", Code.USAGE)
        env[name] = value
    return env
