"""Schedule models: a cron expression (croniter, with a time zone) and the task each firing creates."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from wire.fleet import AgentSelector, FleetLimit
from wire.ids import parse_numbered
from wire.tasks import TaskCreate

ONCE = "@once"
"""Fires one time (at `start_at`, else as soon as the schedule is saved), then disables itself."""
MAX_CRON_LENGTH = 200
ScheduleName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Unique; the `cron_source` of every task the schedule creates.",
    ),
]


def format_schedule_id(n: int) -> str:
    return f"schedule-{n}"


def parse_schedule_id(value: str) -> int | None:
    """Accept `schedule-12` or `12`; None when it is neither."""
    return parse_numbered(value, "schedule-")


def zone(name: str) -> ZoneInfo:
    """The time zone called `name` (IANA, e.g. `Asia/Shanghai`); ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as UTC or Asia/Shanghai)") from None


def next_fire(cron: str, tz: str, after: datetime) -> datetime | None:
    """The first time strictly after `after` (aware) that `cron` names, read on the clocks of `tz`, in
    UTC; None for `@once` (its one time is chosen by the caller). ValueError when `cron` names no time."""
    if cron == ONCE:
        return None
    from croniter import CroniterError, croniter  # not every user of wire needs it

    try:
        if not croniter.is_valid(cron):
            raise ValueError(
                "not a cron expression: 5 fields (minute hour day month weekday), 6 with seconds last, "
                "or @once, @hourly, @daily, @weekly, @monthly, @yearly"
            )
        nxt = croniter(cron, after.astimezone(zone(tz))).get_next(datetime)
    except CroniterError as exc:  # e.g. `0 0 30 2 *`: valid fields, but no such day
        raise ValueError(f"names no time that can come: {exc}") from None
    return nxt.astimezone(UTC)


class Missed(StrEnum):
    """What a firing does when it comes more than the cloud's grace late (the cloud was not running)."""

    run_once = "run_once"
    skip = "skip"


class TaskTemplate(TaskCreate):
    """The task each firing creates: a POST /api/v1/tasks body without `sync`, `timeout` or `request_id`
    (no caller waits for a firing, and each firing is a new task). Validated exactly as that body is."""

    sync: SkipJsonSchema[bool] = Field(False, exclude=True)
    timeout: SkipJsonSchema[int] = Field(60, exclude=True)
    request_id: SkipJsonSchema[str | None] = Field(None, exclude=True)

    @field_validator("sync", "timeout", "request_id", mode="before")
    @classmethod
    def _not_for_schedules(cls, v: Any) -> Any:
        # Runs only when the field is given: it is refused rather than silently ignored.
        raise ValueError("not part of a schedule's task (no caller waits for a firing, and each one is a new task)")

    # Fleet runs are not scheduled yet (docs/fleet.md): a schedule's task names one agent_id.
    agent_selector: SkipJsonSchema[AgentSelector | None] = Field(None, exclude=True)
    max_concurrency: SkipJsonSchema[FleetLimit | None] = Field(None, exclude=True)
    max_errors: SkipJsonSchema[FleetLimit | None] = Field(None, exclude=True)

    @field_validator("agent_selector", "max_concurrency", "max_errors", mode="before")
    @classmethod
    def _no_fleet(cls, v: Any) -> Any:
        raise ValueError("a schedule's task runs on one agent_id; fleet runs cannot be scheduled yet")


class ScheduleCreate(BaseModel):
    """Body of POST /api/v1/schedules, and of PUT /api/v1/schedules/{id} (a full replacement)."""

    model_config = ConfigDict(extra="forbid")

    name: ScheduleName
    cron: str = Field(
        min_length=1,
        max_length=MAX_CRON_LENGTH,
        description="5 fields (minute hour day month weekday), 6 with seconds last; @hourly, @daily, ...; or @once.",
    )
    timezone: str = Field("UTC", min_length=1, max_length=64, description="IANA time zone the cron is read in.")
    task: TaskTemplate = Field(description="The task each firing creates (a POST /api/v1/tasks body, no sync).")
    enabled: bool = True
    missed: Missed = Field(
        Missed.run_once,
        description="A firing more than the cloud's grace late (it was not running): `run_once` runs it once "
        "(never once per missed time), `skip` leaves it out.",
    )
    start_at: datetime | None = Field(
        None, description="No firing before this time; `@once` fires at it (when absent, as soon as saved)."
    )

    @field_validator("name")
    @classmethod
    def _strip_name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        v = " ".join(v.split())
        next_fire(v, "UTC", datetime.now(UTC))  # ValueError names the problem
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        zone(v)
        return v

    @field_validator("start_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give a time zone offset (e.g. 2030-01-01T03:00:00+08:00 or ...Z)")
        return v

    @model_validator(mode="after")
    def _cron_in_zone(self) -> ScheduleCreate:
        # A valid expression can still name no time in another zone's calendar; checked once both are known.
        try:
            next_fire(self.cron, self.timezone, datetime.now(UTC))
        except ValueError as exc:
            raise ValueError(f"cron: {exc}") from None
        return self


class ScheduleEnable(BaseModel):
    """Body of PATCH /api/v1/schedules/{id}."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


class ScheduleRead(BaseModel):
    """A schedule as the API returns it; secrets in its task's params and env are masked."""

    id: str
    name: str
    cron: str
    timezone: str
    missed: Missed
    enabled: bool
    agent_id: str
    type: str
    task: dict[str, Any]
    start_at: datetime | None
    next_run_at: datetime | None
    """When it fires next (None while disabled, and after an `@once` fired)."""
    last_run_at: datetime | None
    """When it last created a task."""
    last_task_id: str | None
    last_error: str
    """Why the last firing created no task (agent gone, disabled or offline, token revoked, missed and
    skipped...); empty after a firing that created one."""
    runs: int
    """Tasks created so far."""
    created_by: str
    created_at: datetime
    updated_at: datetime


class ScheduleList(BaseModel):
    """One page of schedules."""

    model_config = ConfigDict(populate_by_name=True)

    items: list[ScheduleRead] = Field(alias="list")
    total: int
    page: int
    page_size: int


class SeedTaskCreate(BaseModel):
    """Seed 001's body of POST /api/tasks: a shell command on a server, on a cron (`@once` for one run)."""

    model_config = ConfigDict(extra="forbid")

    name: ScheduleName
    command: str = Field(min_length=1, max_length=64 * 1024)
    server_id: int = Field(ge=0, lt=2**63, description="The agent whose id is this number written out.")
    cron_expr: str = Field(min_length=1, max_length=MAX_CRON_LENGTH)
