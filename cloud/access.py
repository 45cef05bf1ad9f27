"""Who is calling and what they may do: the principal behind a bearer token and its scope checks.

Deny by default: a scope grants only the actions, agents and task types it names. The bootstrap admin
token, and an API token granted `admin`, may do everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from cloud.services.errors import Forbidden
from wire.credentials import Action, Scope, TokenKind

ADMIN_NAME = "admin"
"""The bootstrap admin token's name in the audit log."""


@dataclass(frozen=True)
class Principal:
    """A resolved token: its kind, its name (what the audit log shows), and what it reaches."""

    kind: TokenKind | None  # None: the bootstrap admin token
    name: str
    credential_id: int | None = None
    agent_id: str | None = None  # agent tokens: the one agent they act for
    scope: Scope = field(default_factory=Scope)
    expires: float | None = None
    """When the token stops working (time.time()); None when it does not expire."""

    @property
    def is_admin(self) -> bool:
        return self.kind is None or (self.kind is TokenKind.api and Action.admin in self.scope.can)

    @property
    def is_caller(self) -> bool:
        return self.kind is None or self.kind is TokenKind.api

    @property
    def all_agents(self) -> bool:
        """Seed 000's Global Scope: every agent."""
        return self.is_admin or "*" in self.scope.agents

    @property
    def all_types(self) -> bool:
        return self.is_admin or "*" in self.scope.types

    def may(self, action: Action) -> bool:
        return self.is_admin or action in self.scope.can

    def reaches_agent(self, agent_id: str, labels: Mapping[str, str] | None = None) -> bool:
        """The agent is named by one of the scope's ids/globs, or carries all of its labels."""
        if self.all_agents:
            return True
        if any(fnmatchcase(agent_id, p) for p in self.scope.agents):
            return True
        want = self.scope.labels
        return bool(want) and labels is not None and all(labels.get(k) == v for k, v in want.items())

    def reaches_type(self, type_name: str) -> bool:
        return self.all_types or any(fnmatchcase(type_name, p) for p in self.scope.types)

    def require(
        self,
        action: Action,
        *,
        agent_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        type_name: str | None = None,
    ) -> None:
        """Forbidden (403) naming what is missing, unless this token may do `action` there."""
        if not self.may(action):
            raise Forbidden(f"token {self.name!r} may not {action.value} (it may: {self._can()})")
        if agent_id is not None and not self.reaches_agent(agent_id, labels):
            raise Forbidden(f"agent_id: token {self.name!r} does not reach agent {agent_id!r}")
        if type_name is not None and not self.reaches_type(type_name):
            raise Forbidden(f"type: token {self.name!r} does not reach {type_name!r} tasks")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden(f"token {self.name!r} is not an admin token")

    def _can(self) -> str:
        return ", ".join(a.value for a in self.scope.can) or "nothing"


ADMIN = Principal(kind=None, name=ADMIN_NAME)
