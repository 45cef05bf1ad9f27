"""Agents: registration, liveness, listing."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from cloud.db.models import AGENTS as A
from cloud.db.types import utcnow
from cloud.services.errors import NotFound
from wire.agents import AgentRead, AgentRegister, AgentStatus

AgentRow = Row[Any]


def register_agent(conn: Connection, reg: AgentRegister) -> None:
    """Create or refresh the agent row; any process of a pool may call this."""
    now = utcnow()
    values = {
        "hostname": reg.hostname,
        "labels": dict(reg.labels),
        "version": reg.version,
        "executors": list(reg.executors),
        "max_concurrency": reg.max_concurrency,
        "last_seen_at": now,
    }
    res = conn.execute(update(A).where(A.c.id == reg.agent_id).values(**values))
    if res.rowcount == 0:
        conn.execute(insert(A).values(id=reg.agent_id, registered_at=now, **values))


def get_agent(conn: Connection, agent_id: str) -> AgentRow:
    """The agent, or NotFound."""
    agent = conn.execute(select(A).where(A.c.id == agent_id)).first()
    if agent is None:
        raise NotFound(f"agent_id: agent not found: {agent_id}")
    return agent


def is_online(last_seen_at: datetime | None, offline_after: float) -> bool:
    """Online while some process of the agent was heard from within `offline_after` seconds."""
    return last_seen_at is not None and utcnow() - last_seen_at <= timedelta(seconds=offline_after)


def list_agents(conn: Connection) -> list[AgentRow]:
    return list(conn.execute(select(A).order_by(A.c.id)).all())


def to_read(agent: AgentRow, offline_after: float) -> AgentRead:
    """The API shape, with status derived from the heartbeat age."""
    return AgentRead(
        id=agent.id,
        hostname=agent.hostname,
        labels=agent.labels,
        version=agent.version,
        executors=agent.executors,
        max_concurrency=agent.max_concurrency,
        status=AgentStatus.online if is_online(agent.last_seen_at, offline_after) else AgentStatus.offline,
        last_seen_at=agent.last_seen_at,
        registered_at=agent.registered_at,
    )


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


_AGENT_BY_ID = select(A).where(A.c.id == bindparam("b_id"))


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
        row = conn.execute(_AGENT_BY_ID, {"b_id": agent_id}).first()
        if row is None:
            self._rows.pop(agent_id, None)
        else:
            self._rows[agent_id] = (now, row)
        return row
