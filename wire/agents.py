"""Agent protocol models: register, claim, heartbeat, and the agent as the API shows it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wire.tasks import Assignment

AGENT_ID_PATTERN = r"^[^\x00-\x20\x7f*?\[\]/\\]+$"
"""Agent ids a new agent may register: a glob in a token's scope can never mean an id literally."""


class AgentRegister(BaseModel):
    """Body of POST /api/v1/agents/register; one agent id may be served by several processes."""

    agent_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=AGENT_ID_PATTERN,
        description="No whitespace, control characters, `/`, `\\` or glob characters (`*?[]`): token scopes "
        "name agents by glob.",
    )
    hostname: str = Field("", max_length=255)
    labels: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=64
    )
    version: str = Field("", max_length=64)
    executors: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=256)
    max_concurrency: int = Field(1, ge=1, le=10_000)


class AgentStatus(StrEnum):
    online = "online"
    offline = "offline"


class AgentRead(BaseModel):
    """An agent as the API shows it; `status` comes from the age of its last heartbeat."""

    id: str
    hostname: str
    labels: dict[str, str]
    version: str
    executors: list[str]
    max_concurrency: int
    status: AgentStatus
    disabled: bool = False
    last_seen_at: datetime | None
    registered_at: datetime


class ClaimRequest(BaseModel):
    """Body of POST /api/v1/agents/{id}/claim: a long-poll for up to `capacity` tasks."""

    capacity: int = Field(1, ge=1, le=1000)
    # The cloud caps the wait (claim_wait_max_seconds over HTTP, channel_claim_wait_max_seconds on a channel).
    wait_s: float = Field(25.0, ge=0, le=3600)


class Heartbeat(BaseModel):
    """Body of POST /api/v1/agents/{id}/heartbeat; renews the lease of every running task listed.

    With `wait_s` > 0 the cloud holds the answer until a cancel is requested for one of them (or the
    wait ends), so a cancel reaches the agent at once instead of at the next beat.
    """

    running: list[str] = Field(default_factory=list, max_length=10_000)
    tokens: dict[str, Annotated[str, Field(max_length=128, pattern=r"^[!-~]*$")]] = Field(
        default_factory=dict,
        max_length=10_000,
        description="task id -> the task_token of the attempt this process runs. With it, only that attempt's "
        "lease is renewed, and a task now in another attempt is answered in `cancel` (this one is stale).",
    )
    wait_s: float = Field(0.0, ge=0, le=60)


class HeartbeatReply(BaseModel):
    cancel: list[str] = Field(default_factory=list)
    lease_seconds: float = 0


class RegisterReply(BaseModel):
    """What the cloud tells a registering agent: its timing and, when it registered with a registration
    token, its own agent token (tga_...), which it uses from then on."""

    agent_id: str
    heartbeat_seconds: float
    lease_seconds: float
    agent_token: str | None = None
    claims_show_online: bool = False
    """The cloud counts an agent whose claim long-poll is in flight as seen, so an idle agent need not
    heartbeat (a cloud of an older version leaves it out: its agents keep beating)."""


class ResultReply(BaseModel):
    """What the cloud answers a result: the task's status and, when the result offered free capacity
    (`claim`), the agent's next assignments, which save it a claim."""

    id: str
    status: str
    assignments: list[Assignment] = Field(default_factory=list)


ChannelOp = Literal["claim", "heartbeat", "logs", "result", "cancel"]


class ChannelRequest(BaseModel):
    """A request frame on the agent channel (a WebSocket per agent process): `body` is the body of the
    HTTP route `op` stands for, checked by the same model; the reply carries the same `id`.

    Replies are `{"id", "ok": <the route's answer>}` or `{"id", "status", "error", "next_seq"?}` with the
    route's status code. `cancel` (body `{"request": id}`) abandons a request in flight and has no reply.
    """

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=0, le=2**53)
    op: ChannelOp
    task_id: str | None = Field(None, min_length=1, max_length=64, description="logs and result: the task.")
    claim: int = Field(0, ge=0, le=1000, description="result: free capacity; the reply brings assignments.")
    body: dict[str, Any] = Field(default_factory=dict)


class ChannelHello(BaseModel):
    """The cloud's first frame on a new channel: the largest frame it accepts, and how often it pings an
    idle channel (None: it does not), so the agent can tell a silent link from a dead one."""

    max_frame_bytes: int
    ping_seconds: float | None = None


class AgentStatusRead(BaseModel):
    """GET /api/v1/agents/{id}/status: whether the agent is there and how busy it is."""

    id: str
    status: AgentStatus
    disabled: bool
    last_seen_at: datetime | None
    seconds_since_seen: float | None = Field(description="Age of the last heartbeat; null if never heard from.")
    pending: int = Field(description="Tasks queued for the agent.")
    running: int = Field(description="Tasks the agent runs now.")
    max_concurrency: int
