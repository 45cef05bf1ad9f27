"""Credentials as the API shows them: scoped API tokens, registration tokens, agent tokens, and the audit log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Pattern = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
TEN_YEARS = 10 * 366 * 86400


class Action(StrEnum):
    """What a token may do. `admin` includes everything (tokens, agents, audit)."""

    create = "create"
    read = "read"
    cancel = "cancel"
    retry = "retry"
    delete = "delete"
    schedule = "schedule"
    """Create, change and delete schedules on the agents and types the token reaches (their firings then
    create tasks there with the token's scope)."""
    files_read = "files:read"
    files_write = "files:write"
    admin = "admin"


TASK_ACTIONS = frozenset({Action.create, Action.read, Action.cancel, Action.retry, Action.delete, Action.schedule})


class TokenKind(StrEnum):
    api = "api"
    registration = "registration"
    agent = "agent"


PREFIXES = {TokenKind.api: "tgp_", TokenKind.registration: "tgr_", TokenKind.agent: "tga_"}
"""Every token starts with its kind's prefix, so secret scanners can find a leaked one."""


class Scope(BaseModel):
    """Which agents and task types a token reaches, and what it may do there. Deny by default."""

    model_config = ConfigDict(extra="forbid")

    agents: list[Pattern] = Field(
        default_factory=list, max_length=100, description="Agent ids or globs (`web-*`); `*` is every agent."
    )
    labels: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=16, description="An agent whose labels include all of these is reached too."
    )
    types: list[Pattern] = Field(default_factory=list, max_length=64, description="Task types; `*` is every type.")
    can: list[Action] = Field(default_factory=list, max_length=16, description="Actions granted.")


class TokenCreate(BaseModel):
    """Body of POST /api/v1/tokens. The token itself is in the answer only, once."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: Literal["api", "registration"] = "api"
    agents: list[Pattern] = Field(
        default_factory=list,
        max_length=100,
        description="api: agents the token reaches; registration: agent ids it may register (default `*`).",
    )
    labels: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=16
    )
    types: list[Pattern] = Field(default_factory=list, max_length=64)
    can: list[Action] = Field(default_factory=list, max_length=16)
    expires_in: int | None = Field(None, ge=60, le=TEN_YEARS, description="Seconds until the token stops working.")
    single_use: bool = Field(False, description="registration only: the token registers one agent, then stops working.")

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.name.strip().lower() == "admin":
            raise ValueError("name: 'admin' is the bootstrap admin token's name in the audit log; choose another")
        if self.kind == "registration":
            if self.labels or self.types or self.can:
                raise ValueError("labels, types, can: a registration token only registers agents (give agents)")
            return self
        if self.single_use:
            raise ValueError("single_use: only registration tokens can be single-use")
        if not self.can:
            raise ValueError("can: name at least one action (create, read, cancel, retry, delete, files:read, ...)")
        if TASK_ACTIONS & set(self.can) and Action.admin not in self.can:
            if not self.agents and not self.labels:
                raise ValueError("agents: a token acting on tasks needs agents or labels ('*' for every agent)")
            if not self.types:
                raise ValueError("types: a token acting on tasks needs task types ('*' for every type)")
        return self

    def scope(self) -> Scope:
        agents = self.agents or (["*"] if self.kind == "registration" else [])
        return Scope(agents=agents, labels=self.labels, types=self.types, can=self.can)


class AgentTokenCreate(BaseModel):
    """Body of POST /api/v1/agents/{id}/tokens: a token for the processes of one agent (e.g. a k8s Secret)."""

    model_config = ConfigDict(extra="forbid")

    name: Name = "agent"
    expires_in: int | None = Field(None, ge=60, le=TEN_YEARS)


class TokenRead(BaseModel):
    """A credential without its secret."""

    id: int
    name: str
    kind: TokenKind
    hint: str = Field(description="The first characters of the token, to tell tokens apart.")
    agent_id: str | None
    scope: Scope
    single_use: bool
    uses: int
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    created_by: str
    expired: bool


class TokenCreated(TokenRead):
    token: str = Field(description="The token; shown this once, only its hash is kept.")


class AgentUpdate(BaseModel):
    """Body of PATCH /api/v1/agents/{id}."""

    model_config = ConfigDict(extra="forbid")

    disabled: bool


class AuditRead(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditList(BaseModel):
    """One page of audit records, newest first."""

    model_config = ConfigDict(populate_by_name=True)

    items: list[AuditRead] = Field(alias="list")
    total: int
    page: int
    page_size: int
