"""`params` of the process types (shell, python, execute): one pydantic model each, messages naming the field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from executors.procs import DEFAULT_KILL_GRACE_S, kill_grace


def optional_text(params: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> None:
    """`params.<name>`, when given, must be a string (non-empty unless allowed)."""
    value = params.get(name)
    if value is None:
        return
    if not isinstance(value, str) or not (allow_empty or value.strip()):
        kind = "string" if allow_empty else "non-empty string"
        raise ValueError(f"params.{name}: must be a {kind}")


def _text(name: str, *, allow_empty: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        optional_text({name: value}, name, allow_empty=allow_empty)
        return value

    return check


def _grace(value: Any) -> float:
    return kill_grace({"kill_grace_s": value})


def _cmd(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("params.cmd: is required and must be a non-empty string")
    return value


def _args(value: Any) -> Any:
    if value is not None and not (isinstance(value, list) and all(isinstance(a, str) for a in value)):
        raise ValueError("params.args: must be a list of strings")
    return value


class ProcessParams(BaseModel):
    """What every process type takes; other keys are left alone (the task's own params)."""

    model_config = ConfigDict(extra="allow")

    cwd: Annotated[str | None, BeforeValidator(_text("cwd", allow_empty=True))] = Field(
        None, description="Working directory; relative to the task's workdir."
    )
    kill_grace_s: Annotated[float, BeforeValidator(_grace)] = Field(
        DEFAULT_KILL_GRACE_S, description="Seconds between SIGTERM and SIGKILL when the task is stopped."
    )


class ShellParams(ProcessParams):
    """`shell`: the shell that runs `command`."""

    shell: Annotated[str | None, BeforeValidator(_text("shell"))] = Field(None, description="Default /bin/sh.")


class PythonParams(ProcessParams):
    """`python`: the interpreter that runs `command`."""

    python: Annotated[str | None, BeforeValidator(_text("python"))] = Field(None, description="Default python3.")


class ExecuteParams(ProcessParams):
    """`execute`: the program and its literal arguments."""

    cmd: Annotated[str, BeforeValidator(_cmd)] = Field(None, validate_default=True, description="The program.")
    args: Annotated[list[str] | None, BeforeValidator(_args)] = Field(None, description="Its arguments.")
