"""Task models: what a caller sends, what the API returns, what an agent is assigned and reports."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from wire.fleet import AgentSelector, FleetLimit, FleetRead, parse_limit
from wire.ids import parse_numbered

MAX_SYNC_WAIT_SECONDS = 300
MAX_RETRIES = 20
AGENT_LOST = "agent lost"
"""The error of an attempt whose agent went away (lease expired, or the agent restarted mid-run); an
error equal to it or starting with `agent lost:` is retryable."""
POLICY_REFUSED = "refused by the agent's policy"
"""The error of an attempt the agent's command policy refused: never retried, the next attempt would be
refused too."""
NOT_DELIVERED = "not delivered"
"""The error prefix of a task no agent claimed within its `expires_in`; retryable."""


def is_lost(error: str) -> bool:
    """Whether an attempt's error says its agent went away (rather than the work failing)."""
    return error == AGENT_LOST or error.startswith(AGENT_LOST + ":")


class TaskStatus(StrEnum):
    """Lifecycle: pending -> running -> one final status, which never changes again."""

    pending = "pending"
    running = "running"
    success = "success"
    failed = "failed"
    timeout = "timeout"
    canceled = "canceled"

    @property
    def is_final(self) -> bool:
        return self not in (TaskStatus.pending, TaskStatus.running)


def format_task_id(n: int) -> str:
    """The public id of task number n (JSON-RPC uses the bare number)."""
    return f"task-{n}"


def parse_task_id(value: str) -> int | None:
    """Accept `task-12` or `12`; None when it is neither."""
    return parse_numbered(value, "task-")


class TaskRequest(BaseModel):
    """The part of a task an executor validates and runs: type, command, params, file, env."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=64, description="Task type, e.g. shell, python, execute.")
    command: str = Field("", description="What to run; its meaning depends on the type.")
    params: dict[str, Any] = Field(default_factory=dict, description="Type-specific parameters.")
    file_id: str = Field("", description="An uploaded file the task uses.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables for shell/python/execute.")

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            # A process environment cannot hold such a name: refused here rather than failing on the agent.
            if not name or "=" in name:
                raise ValueError(f"{name!r} is not a valid variable name (empty, or contains '=')")
        return v


class TaskCreate(TaskRequest):
    """Body of POST /api/v1/tasks."""

    agent_id: str = Field(
        "", max_length=128, description="The agent that runs the task (or `agent_selector`, for several)."
    )
    sync: bool = Field(False, description="Wait until the task ends (or `timeout` passes).")
    timeout: int = Field(60, ge=1, le=MAX_SYNC_WAIT_SECONDS, description="Seconds a sync call waits, 1..300.")
    exec_timeout: int | None = Field(
        None, ge=1, le=7 * 24 * 3600, description="Execution limit in seconds; per-type default when absent."
    )
    request_id: str | None = Field(
        None, min_length=1, max_length=200, description="Idempotency key: the same id returns the same task."
    )
    max_retries: int = Field(
        0, ge=0, le=MAX_RETRIES, description="Further attempts after a retryable failure (see retry_on)."
    )
    retry_backoff: float = Field(
        5.0, ge=0, le=3600, description="Seconds before the first retry; doubled for each later one, with jitter."
    )
    retry_on: Literal["lost", "any"] = Field(
        "lost",
        description="`lost`: retry when the agent was lost or the task was not delivered; `any`: also after "
        "any failure or timeout of the work itself (never after a cancel).",
    )
    expires_in: int | None = Field(
        None,
        ge=1,
        le=30 * 24 * 3600,
        description="Seconds an agent has to claim the task before it fails `not delivered`; "
        "the cloud's default (1 h) when absent.",
    )

    # Fleet runs (issue 20 item 3, docs/fleet.md): instead of agent_id, a parent task and one child per agent.
    agent_selector: AgentSelector | None = Field(
        None, description="Run on every agent it matches (a fleet run, docs/fleet.md) instead of `agent_id`."
    )
    max_concurrency: FleetLimit | None = Field(
        None, description='With agent_selector: targets running at once, a count or "25%" (default 50).'
    )
    max_errors: FleetLimit | None = Field(
        None,
        description='With agent_selector: errors tolerated before no new target starts, a count or "10%" (default 0).',
    )

    @field_validator("agent_id", "type")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be blank")
        return v

    @field_validator("max_concurrency", mode="before")
    @classmethod
    def _concurrency(cls, v: Any) -> Any:
        return None if v is None else parse_limit(v, minimum=1)

    @field_validator("max_errors", mode="before")
    @classmethod
    def _errors(cls, v: Any) -> Any:
        return None if v is None else parse_limit(v, minimum=0)

    @model_validator(mode="after")
    def _one_target(self) -> TaskCreate:
        """Exactly one of agent_id and agent_selector; the fleet limits only with a selector."""
        if self.agent_selector is None:
            if not self.agent_id:
                raise PydanticCustomError("target", "agent_id: is required (or agent_selector, for several agents)")
            for name in ("max_concurrency", "max_errors"):
                if getattr(self, name) is not None:
                    raise PydanticCustomError("target", f"{name}: only with agent_selector")
        elif self.agent_id:
            raise PydanticCustomError("target", "agent_id and agent_selector: send one of them, not both")
        elif self.agent_selector.is_empty():
            raise PydanticCustomError(
                "target", 'agent_selector: give ids, globs or labels (globs: ["*"] for every agent)'
            )
        return self


class TaskRead(BaseModel):
    """A task as the API returns it; secrets in params and env are masked."""

    id: str
    agent_id: str
    type: str
    status: TaskStatus
    command: str
    params: dict[str, Any]
    file_id: str
    env: dict[str, str]
    result: str
    data: Any = None
    exit_code: int | None = None
    error: str
    attempts: int
    """Runs started so far (claims by an agent)."""
    max_retries: int
    retries: int = 0
    """Automatic retries used so far (each one a new attempt after a retryable failure). A manual retry
    (POST /tasks/{id}/retry) adds an attempt but does not count here, nor against `max_retries`."""
    retry_backoff: float = 5.0
    retry_on: str = "lost"
    next_retry_at: datetime | None = None
    """While pending after a retryable failure: when the next attempt may be claimed."""
    expires_at: datetime | None = None
    """While pending: when the task fails `not delivered` if no agent has claimed it."""
    last_error: str
    request_id: str | None = None
    cron_source: str | None = None
    exec_timeout: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    sync_timed_out: bool = False
    """True when a sync call returned at its wait timeout while the task goes on."""
    parent_id: str | None = None
    """A fleet run's child: the parent task (docs/fleet.md)."""
    fleet: FleetRead | None = None
    """A fleet run's parent: its selector and limits; its aggregate on GET /tasks/{id} and sync answers.
    A parent's `attempts` counts the children started so far."""


class TaskList(BaseModel):
    """One page of tasks."""

    model_config = ConfigDict(populate_by_name=True)

    items: list[TaskRead] = Field(alias="list")
    total: int
    page: int
    page_size: int
    total_exact: bool = Field(
        True,
        description="false when more tasks match than the cloud counts (list_count_limit): `total` is then a "
        "lower bound",
    )


class Assignment(BaseModel):
    """A claimed task as the agent receives it: the full params (with secrets) and this attempt's token."""

    id: str
    type: str
    command: str
    params: dict[str, Any]
    file_id: str
    env: dict[str, str]
    exec_timeout: int
    attempt: int
    task_token: str
    max_log_bytes: int


class LogStream(StrEnum):
    stdout = "stdout"
    stderr = "stderr"
    system = "system"


class LogLevel(StrEnum):
    info = "info"
    warn = "warn"
    error = "error"


MAX_BATCH_LINES = 10_000
"""Lines one log batch or result may carry, counting every line of a run."""


class LogLine(BaseModel):
    """One line of output; `seq` is contiguous per attempt, starting at 1.

    With `more`, a run: this line, then `more[0]` as seq + 1, `more[1]` as seq + 2, ..., all of the same
    stream, level and time. A batch of short lines then costs one string per line on the wire and in
    validation, not one object (which made validating a batch cost more than storing it).
    """

    seq: int = Field(ge=1)
    stream: LogStream = LogStream.stdout
    level: LogLevel | None = None
    message: str
    ts: datetime | None = None
    more: list[str] | None = Field(None, max_length=MAX_BATCH_LINES)

    @property
    def count(self) -> int:
        """How many lines this holds (1 + the run's `more`)."""
        return 1 + len(self.more) if self.more else 1

    @property
    def last_seq(self) -> int:
        """The seq of the last line it holds."""
        return self.seq + self.count - 1

    def messages(self) -> list[str]:
        """Every line it holds, in order."""
        return [self.message, *self.more] if self.more else [self.message]


def line_count(lines: list[LogLine]) -> int:
    """How many lines `lines` hold, runs counted line by line."""
    return sum(ln.count for ln in lines)


def _bounded(lines: list[LogLine]) -> list[LogLine]:
    if len(lines) > 1 or (lines and lines[0].more):
        total = line_count(lines)
        if total > MAX_BATCH_LINES:
            raise ValueError(f"holds {total} lines; at most {MAX_BATCH_LINES} per request")
    return lines


TaskToken = Annotated[str, Field(max_length=128, pattern=r"^[!-~]*$", description="The attempt's task_token.")]
"""Printable ASCII, as the cloud makes them: anything else cannot match and is refused at the edge."""


class LogBatch(BaseModel):
    """Body of POST /api/v1/agent/tasks/{id}/logs."""

    task_token: TaskToken
    lines: list[LogLine] = Field(max_length=MAX_BATCH_LINES)

    _lines_bounded = field_validator("lines")(_bounded)


class TaskReport(BaseModel):
    """Body of POST /api/v1/agent/tasks/{id}/result: the outcome plus any lines not yet shipped."""

    task_token: TaskToken
    status: TaskStatus
    exit_code: int | None = Field(None, ge=-(2**31), lt=2**31)
    result: str = ""
    data: Any = None
    error: str = ""
    log_lines: int = Field(0, ge=0, le=2**62, description="How many lines this attempt logged in all.")
    lines: list[LogLine] = Field(default_factory=list, max_length=MAX_BATCH_LINES)

    _lines_bounded = field_validator("lines")(_bounded)

    @field_validator("status")
    @classmethod
    def _final(cls, v: TaskStatus) -> TaskStatus:
        if not v.is_final:
            raise ValueError("must be a final status (success, failed, timeout, canceled)")
        return v


class LogRead(BaseModel):
    """A stored log line as the API returns it."""

    id: int
    task_id: str
    attempt: int = 1
    """The attempt that wrote it (system lines of a task never claimed: 0)."""
    seq: int
    level: LogLevel
    stream: LogStream
    message: str
    timestamp: datetime
