"""Fleet runs: one task on many agents (an `agent_selector` instead of an `agent_id`), run a few at a time
and stopped after too many errors, as AWS SSM Run Command's MaxConcurrency and MaxErrors do."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FLEET_AGENT_ID = "*"
"""The `agent_id` of a fleet run's parent task. No agent can register it (wire.agents.AGENT_ID_PATTERN
refuses `*`), so no agent ever claims a parent; its children carry the real agent ids."""

MAX_SELECTOR_IDS = 1000
MAX_SELECTOR_GLOBS = 100
MAX_SELECTOR_LABELS = 64
DEFAULT_MAX_CONCURRENCY = 50
"""SSM's default: 50 targets at once."""
DEFAULT_MAX_ERRORS = 0
"""SSM's default: no new target is started after the first error."""

_LIMIT = re.compile(r"^(\d{1,6})(%?)$")
_GLOB_CHARS = "*?["

NOT_RUN = "not_run"
"""A target's status while it has no child task: not started yet, or never (canceled, max_errors)."""

SelectorText = Annotated[str, Field(min_length=1, max_length=128)]


class AgentSelector(BaseModel):
    """Which agents a fleet run targets: the agents named in `ids` or matching one of `globs` (or every
    agent when both are empty), keeping those that carry all of `labels`. At least one field is given."""

    model_config = ConfigDict(extra="forbid")

    ids: list[SelectorText] = Field(
        default_factory=list, max_length=MAX_SELECTOR_IDS, description="Agent ids, exactly (each must exist)."
    )
    globs: list[SelectorText] = Field(
        default_factory=list, max_length=MAX_SELECTOR_GLOBS, description="Agent id patterns: `*`, `?`, `[...]`."
    )
    labels: dict[SelectorText, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=MAX_SELECTOR_LABELS, description="Labels every target carries (AND)."
    )

    @field_validator("ids")
    @classmethod
    def _plain_ids(cls, v: list[str]) -> list[str]:
        for i, agent_id in enumerate(v):
            if any(c in agent_id for c in _GLOB_CHARS):
                raise ValueError(f"[{i}] {agent_id!r} is a pattern; put patterns in agent_selector.globs")
        return list(dict.fromkeys(v))  # named twice is still one target

    def is_empty(self) -> bool:
        return not (self.ids or self.globs or self.labels)


FleetLimit = int | str
"""A count (`5`, `"5"`) or a percentage of the targets (`"25%"`), as SSM's MaxConcurrency/MaxErrors."""


def parse_limit(value: Any, *, minimum: int) -> FleetLimit:
    """`value` checked and normalised: a whole number >= `minimum` (as an int) or a percentage from
    `minimum`% to 100% (as `"N%"`); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('must be a whole number or a percentage such as "10%"')
    match = _LIMIT.fullmatch(str(value).strip())
    if match is None:
        shown = str(value)[:40]
        raise ValueError(f'{shown!r} is neither a whole number (up to 6 digits) nor a percentage such as "10%"')
    number, percent = int(match.group(1)), bool(match.group(2))
    if percent and not minimum <= number <= 100:
        raise ValueError(f"a percentage must be from {minimum}% to 100%")
    if not percent and number < minimum:
        raise ValueError(f"must be at least {minimum}")
    return f"{number}%" if percent else number


def resolve_limit(limit: FleetLimit, targets: int, *, round_up: bool) -> int:
    """The count a limit means for `targets` targets. A percentage of concurrency rounds up (never 0: the
    run must start); one of errors rounds down (10% of 5 targets tolerates no error)."""
    if isinstance(limit, int):
        return limit
    share = int(limit.rstrip("%")) * targets / 100
    return max(1, math.ceil(share)) if round_up else math.floor(share)


class FleetTarget(BaseModel):
    """One target agent of a fleet run and how it went (`not_run`: never started, because the run was
    canceled or stopped by max_errors, or has not reached it yet)."""

    agent_id: str
    task_id: str | None = None
    status: str = Field(description="The child task's status, or `not_run` while it has none.")
    exit_code: int | None = None
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


Outcome = Literal["success", "failed", "incomplete", "canceled"]


class FleetRead(BaseModel):
    """A fleet run's settings and, on GET /api/v1/tasks/{id} and sync answers, its aggregate."""

    selector: AgentSelector
    max_concurrency: FleetLimit
    max_errors: FleetLimit
    concurrency: int = Field(description="max_concurrency as a count of these targets.")
    error_limit: int = Field(description="max_errors as a count: more errors than this stop new targets.")
    targets: int = Field(description="How many agents the selector matched when the run was created.")
    outcome: Outcome | None = Field(
        None,
        description="Once the run ended: `success` (every target succeeded), `failed` (errors passed max_errors), "
        "`incomplete` (every target tried, not all succeeded, within max_errors), `canceled`.",
    )
    counts: dict[str, int] | None = Field(
        None,
        description="Targets by status (pending, running, success, failed, timeout, canceled, not_run) "
        "and `errors` (failed or timed out, not counting `not delivered`).",
    )
    results: list[FleetTarget] | None = Field(None, description="Each target, in the order they are started.")
