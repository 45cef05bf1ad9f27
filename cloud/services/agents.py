"""Agents: registration (and the agent token it hands out), liveness, listing, disabling, deleting."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.access import Principal
from cloud.db import events
from cloud.db.models import AGENTS as A
from cloud.db.models import TASKS as T
from cloud.db.prepared import Prepared
from cloud.db.types import utcnow
from cloud.services import audit, credentials, transitions
from cloud.services.errors import Conflict, Forbidden, NotFound
from wire.agents import AgentRegister
from wire.credentials import TokenKind
from wire.tasks import TaskStatus

AgentRow = Any
"""A row of the agents table, from SQLAlchemy or a prepared statement (cloud.db.prepared): fields read as attributes."""


def register_agent(conn: Connection, reg: AgentRegister, principal: Principal) -> str | None:
    """Create or refresh the agent row. With a registration token this hands out the agent's own token
    (returned, shown once); with the agent's token it only refreshes the row (any process of a pool)."""
    if principal.kind is TokenKind.agent and principal.agent_id != reg.agent_id:
        raise Forbidden(f"agent_id: this agent token belongs to agent {principal.agent_id!r}, not {reg.agent_id!r}")
    if principal.kind is not TokenKind.agent and not principal.reaches_agent(reg.agent_id):
        raise Forbidden(f"agent_id: registration token {principal.name!r} may not register agent {reg.agent_id!r}")
    created = _lock_or_create(conn, reg)
    token = None if principal.kind is TokenKind.agent else _admit(conn, reg.agent_id, principal)
    if not created:
        _refresh(conn, reg)
    if created or token is not None:
        audit.record(conn, principal, "agent.register", reg.agent_id, hostname=reg.hostname)
    return token


def _lock_or_create(conn: Connection, reg: AgentRegister) -> bool:
    """Hold the agent's row for this transaction, creating it if missing; whether it was created. Two
    registrations of one id then run one after the other (PostgreSQL row lock; SQLite has one writer)."""
    if conn.execute(select(A.c.id).where(A.c.id == reg.agent_id).with_for_update()).first() is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(insert(A).values(id=reg.agent_id, registered_at=utcnow(), disabled=False, **_values(reg)))
    except IntegrityError:
        raise Conflict(f"agent_id: agent {reg.agent_id!r} was registered by another request just now") from None
    return True


def _admit(conn: Connection, agent_id: str, principal: Principal) -> str:
    """A registration: refuse an id that has an agent token, count the registration token's use, and
    issue the agent's token."""
    if credentials.agent_has_tokens(conn, agent_id):
        # Registering again would hand a second party the agent's identity, and its tasks' secrets: also
        # for an id whose token an admin issued ahead of its first registration.
        raise Conflict(
            f"agent_id: agent {agent_id!r} is already registered; its processes use its agent token (saved in "
            "the first process's data dir), or an admin issues one (POST /api/v1/agents/{id}/tokens) or deletes it"
        )
    if principal.credential_id is not None:
        row = credentials.get_token(conn, principal.credential_id)
        if not credentials.use_registration(conn, row):
            raise Forbidden(f"registration token {principal.name!r} was single-use and is used up")
    name = f"{agent_id[:100]} (registered)"
    _, token = credentials.issue_agent_token(conn, agent_id, name, principal.name)
    return token


def _values(reg: AgentRegister) -> dict[str, Any]:
    return {
        "hostname": reg.hostname,
        "labels": dict(reg.labels),
        "version": reg.version,
        "executors": list(reg.executors),
        "max_concurrency": reg.max_concurrency,
        "last_seen_at": utcnow(),
    }


def _refresh(conn: Connection, reg: AgentRegister) -> None:
    conn.execute(update(A).where(A.c.id == reg.agent_id).values(**_values(reg)))


def set_disabled(conn: Connection, agent_id: str, disabled: bool) -> AgentRow:
    """Disable (no task handed out or accepted; what runs finishes) or enable an agent."""
    get_agent(conn, agent_id)
    conn.execute(update(A).where(A.c.id == agent_id).values(disabled=disabled))
    if not disabled:
        events.publish(conn, f"agent:{agent_id}")  # its pending tasks can be claimed again
    return get_agent(conn, agent_id)


def delete_agent(conn: Connection, agent_id: str) -> int:
    """Delete the agent and its tokens, and fail its pending and running tasks `agent deleted` (nothing
    would run them); returns how many tasks it failed."""
    get_agent(conn, agent_id)
    credentials.delete_agent_tokens(conn, agent_id)
    conn.execute(delete(A).where(A.c.id == agent_id))
    events.publish(conn, f"agent:{agent_id}", f"cancel:{agent_id}")
    unfinished = conn.execute(select(T).where(T.c.agent_id == agent_id, T.c.status.in_(_UNFINISHED))).all()
    line = f"{AGENT_DELETED}: the task will not run"
    return sum(
        transitions.fail(conn, task, AGENT_DELETED, expect_from=TaskStatus(task.status), line=line) is not None
        for task in unfinished
    )


_UNFINISHED = [TaskStatus.pending.value, TaskStatus.running.value]


AGENT_DELETED = "agent deleted"


def get_agent(conn: Connection, agent_id: str) -> AgentRow:
    """The agent, or NotFound."""
    agent = conn.execute(select(A).where(A.c.id == agent_id)).first()
    if agent is None:
        raise NotFound(f"agent_id: agent not found: {agent_id}")
    return agent


def task_counts(conn: Connection, agent_id: str) -> dict[str, int]:
    """The agent's pending and running tasks (its queue and what it runs now)."""
    counts = dict.fromkeys((TaskStatus.pending.value, TaskStatus.running.value), 0)
    rows = conn.execute(
        select(T.c.status, func.count())
        .where(T.c.agent_id == agent_id, T.c.status.in_(list(counts)))
        .group_by(T.c.status)
    )
    counts.update({status: int(n) for status, n in rows})
    return counts


def is_online(last_seen_at: datetime | None, offline_after: float) -> bool:
    """Online while some process of the agent was heard from within `offline_after` seconds."""
    return last_seen_at is not None and utcnow() - last_seen_at <= timedelta(seconds=offline_after)


def list_agents(conn: Connection) -> list[AgentRow]:
    return list(conn.execute(select(A).order_by(A.c.id)).all())


class SeenThrottle:
    """Per-process memory of when each agent was last recorded as seen, so a busy agent's many claims
    write `last_seen_at` about once a second instead of on every claim."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def due(self, agent_id: str) -> bool:
        """True (and remembered) when the agent was not recorded within the interval."""
        now = time.monotonic()
        if now - self._last.get(agent_id, -self.interval) < self.interval:
            return False
        self._last[agent_id] = now
        return True


_AGENT_BY_ID = Prepared(select(A).where(A.c.id == bindparam("b_id")))


class AgentCache:
    """Agent rows as task creation sees them, read at most once per `ttl` per agent by this process.

    Creating a task needs the agent's liveness and executors; reading them on every create cost a
    query per task. A second of staleness is far below the offline threshold. Misses are not cached,
    so a newly registered agent can be used at once.
    """

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._rows: dict[str, tuple[float, AgentRow]] = {}

    def get(self, conn: Connection, agent_id: str) -> AgentRow | None:
        now = time.monotonic()
        hit = self._rows.get(agent_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        row = _AGENT_BY_ID.first(conn, {"b_id": agent_id})
        if row is None:
            self._rows.pop(agent_id, None)
        else:
            self._rows[agent_id] = (now, row)
        return row

    def forget(self, agent_id: str) -> None:
        """Read the agent afresh next time (this replica disabled or deleted it)."""
        self._rows.pop(agent_id, None)
