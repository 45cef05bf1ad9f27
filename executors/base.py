"""The executor contract: validate a request (cloud, cheap) and run an assignment (agent).

Keep this additive-only: third-party executors registered through the `tiangong.executors`
entry-point group depend on it. Every hook the cloud or agent calls is declared here with its default;
the registry gives a third-party class that lacks one of them the default from `BaseExecutor`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from wire.tasks import Assignment, LogLevel, LogStream, TaskRequest, TaskStatus

T = TypeVar("T")
DEFAULT_EXEC_TIMEOUT = 1800
"""Execution limit in seconds for types that do not set `default_exec_timeout`."""


@dataclass
class Outcome:
    """How a task ended. `result` is the human-readable text, `data` the structured result."""

    status: TaskStatus
    exit_code: int | None = None
    result: str = ""
    data: Any = None
    error: str = ""


class RunContext(Protocol):
    """What the agent gives an executor while it runs one task."""

    task_id: str
    workdir: Path
    """A directory the task may use (its working directory unless params say otherwise)."""
    cancel_event: asyncio.Event
    """Set when the caller canceled the task or the agent is shutting down."""
    deadline: float
    """`asyncio.get_running_loop().time()` at which the execution limit is reached."""
    max_output_bytes: int
    """Cap for output kept per task (log and result each keep head and tail within it)."""
    connections: Mapping[str, Mapping[str, Any]]
    """Named connections from the agent's config file."""
    config: Mapping[str, Any]
    """The rest of the agent's config file: `goinception_url`, `kubeconfig`, `context`, `namespace`."""

    def log(self, message: str, stream: LogStream = LogStream.stdout, level: LogLevel | None = None) -> None:
        """Record one log line (no trailing newline); shipped to the cloud in batches."""
        ...

    def log_lines(self, messages: list[str], stream: LogStream = LogStream.stdout) -> None:
        """Record several lines of one stream at once, as `log` would each (cheaper per line)."""
        ...

    async def fetch_file(self, file_id: str) -> Path:
        """Return a local path holding the uploaded file `file_id` (downloaded and verified if needed)."""
        ...

    def process_started(self, pid: int) -> None:
        """Call right after starting a process in its own process group (pid = group id): the agent
        records it, so that if the agent dies while the task runs, its next start kills the group."""
        ...

    def cloud_route(self, path: str) -> tuple[str, dict[str, str]]:
        """The URL of `path` on the cloud this agent talks to, and the headers that authenticate the agent
        there (its own token: send them to that URL only). For a type that talks back to the cloud itself
        (`web_shell`'s relay)."""
        ...


ParamsModel = type[BaseModel]
"""A type's params model (an alias: inside an executor class, `type` is its name attribute)."""


class AnyParams(BaseModel):
    """Params of a type that declares no model: any object."""

    model_config = ConfigDict(extra="allow")


class Executor(Protocol):
    """One task type. `validate` runs in the cloud at POST time: no heavy imports, no I/O."""

    type: ClassVar[str]
    params_model: ClassVar[ParamsModel]
    """The model `params` must parse with; its validators name the field in their messages."""
    default_exec_timeout: ClassVar[int]
    """Execution limit in seconds a task gets when it gives none (see `exec_timeout_for`)."""

    def validate(self, req: TaskRequest) -> None:
        """Raise ValueError naming the field, e.g. `params.cmd is required`."""
        ...

    def exec_timeout_for(self, req: TaskRequest) -> int:
        """The execution limit for `req` when it gives none (database types derive it from its params)."""
        ...

    def shown_command(self, command: str) -> str:
        """`command` as the API may show it (k8s masks a Secret's values); secrets in command-line shapes
        are masked after this by the registry."""
        ...

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        """Run the task to its end, honouring ctx.cancel_event and ctx.deadline. Never change `task.params` or
        `task.env` in place (copy them): the agent finds the secrets to mask in them when output first
        needs masking, which may come after run has started."""
        ...


class BaseExecutor:
    """Defaults of every hook: the one validation path (params parsed with `params_model`, then `check`)."""

    type: ClassVar[str]
    params_model: ClassVar[ParamsModel] = AnyParams
    default_exec_timeout: ClassVar[int] = DEFAULT_EXEC_TIMEOUT

    def validate(self, req: TaskRequest) -> None:
        """Parse `params` with the type's model, then run the type's checks of the rest of the request."""
        self.check(req, self.parse_params(req.params))

    def parse_params(self, params: Mapping[str, Any]) -> Any:
        """`params` parsed with `params_model`; ValueError names the first bad field as `params.<path>`."""
        return parse_model(self.params_model, params, self.type)

    def check(self, req: TaskRequest, params: Any) -> None:
        """What the model cannot see (command, file_id); raise ValueError naming the field."""
        return None

    def exec_timeout_for(self, req: TaskRequest) -> int:
        """`default_exec_timeout`, whatever the request says."""
        return self.default_exec_timeout

    def shown_command(self, command: str) -> str:
        """`command` unchanged."""
        return command

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        """A type must say how it runs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run")


def parse_model(model: type[BaseModel], params: Mapping[str, Any], type_name: str | None = None) -> Any:
    """`params` validated by `model` (the task type in the validation context); ValueError names the first
    bad field as `params.<path>: <problem>`. A validator checking several fields names its field itself by
    starting its message with `params`."""
    try:
        return model.model_validate(dict(params), context={"type": type_name})
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if msg.startswith("params"):
            raise ValueError(msg) from None
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        raise ValueError(f"params{'.' + loc if loc else ''}: {msg}") from None


def strict_flag(name: str) -> Callable[[Any], bool]:
    """A params model's check that `params.<name>` is a JSON boolean ("yes" or 1 is not taken for true)."""

    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"params.{name}: must be true or false")
        return value

    return check


class Stoppable(Protocol):
    """What `until_stopped` watches: a RunContext, or any object with a cancel event and a deadline."""

    @property
    def cancel_event(self) -> asyncio.Event: ...

    @property
    def deadline(self) -> float: ...


@dataclass
class Limits:
    """A cancel event and a deadline other than the task's: one target's, or a commit's grace period."""

    cancel_event: asyncio.Event
    deadline: float
    """Loop time (`asyncio.get_running_loop().time()`)."""


class Stopped(Exception):
    """A wait was cut short: `reason` is "canceled" or "timeout".

    `abandoned`: work left running in a thread still owns what it used (a connection), which must then
    only be dropped. `in_flight`: a request had been sent and not answered, so it may still take effect.
    """

    def __init__(self, reason: str, *, abandoned: bool = False, in_flight: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.abandoned = abandoned
        self.in_flight = in_flight

    @property
    def status(self) -> TaskStatus:
        """The task status this stop ends a task with."""
        return TaskStatus.canceled if self.reason == "canceled" else TaskStatus.timeout


def stop_reason(limits: Stoppable) -> str | None:
    """ "canceled" or "timeout" when `limits` say to stop now, else None."""
    if limits.cancel_event.is_set():
        return "canceled"
    if asyncio.get_running_loop().time() >= limits.deadline:
        return "timeout"
    return None


async def until_stopped(limits: Stoppable, aw: Awaitable[T]) -> T:
    """The result of `aw`, unless `limits.cancel_event` is set or `limits.deadline` passes first: then `aw`
    is canceled and Stopped raised. Wrap `aw` in `asyncio.shield` to keep it running after a stop."""
    reason = stop_reason(limits)
    if reason is not None:
        if inspect.iscoroutine(aw):
            aw.close()  # never started: closing it spares a "never awaited" warning
        raise Stopped(reason)
    work = asyncio.ensure_future(aw)
    canceled = asyncio.ensure_future(limits.cancel_event.wait())
    loop = asyncio.get_running_loop()
    try:
        done, _ = await asyncio.wait(
            (work, canceled), timeout=max(0.0, limits.deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:
        work.cancel()  # the caller itself was canceled: take its work down with it
        raise
    finally:
        canceled.cancel()
    if work in done:
        return work.result()
    work.cancel()
    raise Stopped("canceled" if limits.cancel_event.is_set() else "timeout")


def discard_outcome(future: asyncio.Future[Any]) -> None:
    """A done-callback for work left running after a stop: retrieve its exception, so that asyncio does
    not report it as never retrieved."""
    if not future.cancelled():
        future.exception()
