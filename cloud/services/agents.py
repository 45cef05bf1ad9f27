"""Agents: registration, liveness, listing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from cloud.db.models import Agent
from cloud.db.types import utcnow
from cloud.services.errors import NotFound
from wire.agents import AgentRead, AgentRegister, AgentStatus


def register_agent(session: Session, reg: AgentRegister) -> Agent:
    """Create or refresh the agent row; any process of a pool may call this."""
    now = utcnow()
    agent = session.get(Agent, reg.agent_id)
    if agent is None:
        agent = Agent(id=reg.agent_id, registered_at=now)
        session.add(agent)
    agent.hostname = reg.hostname
    agent.labels = dict(reg.labels)
    agent.version = reg.version
    agent.executors = list(reg.executors)
    agent.max_concurrency = reg.max_concurrency
    agent.last_seen_at = now
    session.flush()
    return agent


def touch_agent(session: Session, agent_id: str) -> bool:
    """Record that the agent was heard from; False when it never registered."""
    res = session.execute(update(Agent).where(col(Agent.id) == agent_id).values(last_seen_at=utcnow()))
    return bool(res.rowcount)  # type: ignore[attr-defined]


def get_agent(session: Session, agent_id: str) -> Agent:
    """The agent, or NotFound."""
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent_id: agent not found: {agent_id}")
    return agent


def is_online(agent: Agent, offline_after: float) -> bool:
    """Online while some process of the agent was heard from within `offline_after` seconds."""
    return agent.last_seen_at is not None and utcnow() - agent.last_seen_at <= timedelta(seconds=offline_after)


def list_agents(session: Session) -> list[Agent]:
    return list(session.exec(select(Agent).order_by(col(Agent.id))))


def to_read(agent: Agent, offline_after: float) -> AgentRead:
    """The API shape, with status derived from the heartbeat age."""
    return AgentRead(
        id=agent.id,
        hostname=agent.hostname,
        labels=agent.labels,
        version=agent.version,
        executors=agent.executors,
        max_concurrency=agent.max_concurrency,
        status=AgentStatus.online if is_online(agent, offline_after) else AgentStatus.offline,
        last_seen_at=agent.last_seen_at,
        registered_at=agent.registered_at,
    )
