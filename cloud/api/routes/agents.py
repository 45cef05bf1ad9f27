"""Caller routes for agents: list and get (online/offline from the heartbeat age); admins disable, delete,
and issue agent tokens."""

from __future__ import annotations

import re

from fastapi import APIRouter, Response

from cloud.api.deps import AdminAuth, AgentIdPath, AppDep, CallerAuth, PrincipalDep
from cloud.api.guard import GuardedRoute
from cloud.db.types import utcnow
from cloud.services import agents as svc
from cloud.services import audit, credentials
from cloud.services.errors import BadRequest
from cloud.services.present import agent_read, token_read
from wire.agents import AGENT_ID_PATTERN, AgentRead, AgentStatusRead
from wire.credentials import Action, AgentTokenCreate, AgentUpdate, TokenCreated
from wire.tasks import TaskStatus

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], route_class=GuardedRoute)


@router.get("", response_model=list[AgentRead], dependencies=[CallerAuth])
async def list_agents(principal: PrincipalDep, app: AppDep) -> list[AgentRead]:
    """The agents this token reaches (every agent for an admin)."""
    principal.require(Action.read)
    offline = app.settings.agent_offline_seconds
    with app.db.transaction() as conn:
        rows = svc.list_agents(conn)
    return [agent_read(a, offline) for a in rows if principal.reaches_agent(a.id, a.labels)]


@router.get("/{agent_id}", response_model=AgentRead, dependencies=[CallerAuth])
async def get_agent(agent_id: AgentIdPath, principal: PrincipalDep, app: AppDep) -> AgentRead:
    principal.require(Action.read)
    with app.db.transaction() as conn:
        agent = svc.get_agent(conn, agent_id)
    principal.require(Action.read, agent_id=agent.id, labels=agent.labels)
    return agent_read(agent, app.settings.agent_offline_seconds)


@router.get("/{agent_id}/status", response_model=AgentStatusRead, dependencies=[CallerAuth])
async def agent_status(agent_id: AgentIdPath, principal: PrincipalDep, app: AppDep) -> AgentStatusRead:
    """Online or offline (heartbeat age), disabled, and its queue: pending and running task counts."""
    principal.require(Action.read)
    with app.db.transaction() as conn:
        agent = svc.get_agent(conn, agent_id)
        principal.require(Action.read, agent_id=agent.id, labels=agent.labels)
        counts = svc.task_counts(conn, agent.id)
    read = agent_read(agent, app.settings.agent_offline_seconds)
    age = None if read.last_seen_at is None else max(0.0, (utcnow() - read.last_seen_at).total_seconds())
    return AgentStatusRead(
        id=read.id,
        status=read.status,
        disabled=read.disabled,
        last_seen_at=read.last_seen_at,
        seconds_since_seen=age,
        pending=counts[TaskStatus.pending.value],
        running=counts[TaskStatus.running.value],
        max_concurrency=read.max_concurrency,
    )


@router.put("/{agent_id}", response_model=AgentRead, dependencies=[AdminAuth])
@router.patch("/{agent_id}", response_model=AgentRead, dependencies=[AdminAuth])
async def update_agent(agent_id: AgentIdPath, body: AgentUpdate, principal: PrincipalDep, app: AppDep) -> AgentRead:
    """`{"disabled": true}`: the agent is handed no task and accepts no new one (what runs finishes);
    `false` enables it again. PUT and PATCH take the same body: `disabled` is the one field an admin sets
    (hostname, labels, executors and concurrency are the agent's own, sent when it registers)."""
    with app.db.transaction() as conn:
        agent = svc.set_disabled(conn, agent_id, body.disabled)
        audit.record(conn, principal, "agent.disable" if body.disabled else "agent.enable", agent_id)
    app.agents.forget(agent_id)
    return agent_read(agent, app.settings.agent_offline_seconds)


@router.delete("/{agent_id}", status_code=204, dependencies=[AdminAuth])
async def delete_agent(agent_id: AgentIdPath, principal: PrincipalDep, app: AppDep) -> Response:
    """Delete the agent: its tokens stop working, its pending and running tasks fail `agent deleted`.
    The id can then be registered again."""
    with app.db.transaction() as conn:
        failed = svc.delete_agent(conn, agent_id)
        audit.record(conn, principal, "agent.delete", agent_id, failed_tasks=failed)
    app.agents.forget(agent_id)
    return Response(status_code=204)


@router.post("/{agent_id}/tokens", status_code=201, response_model=TokenCreated, dependencies=[AdminAuth])
async def issue_agent_token(
    agent_id: AgentIdPath, body: AgentTokenCreate, principal: PrincipalDep, app: AppDep
) -> TokenCreated:
    """A new agent token (tga_..., shown once) for the agent's processes, e.g. a Kubernetes Secret shared by
    a Deployment's replicas. The agent need not be registered yet. Rotate by issuing a new one, rolling it
    out, then deleting the old one (DELETE /api/v1/tokens/{id})."""
    if not re.fullmatch(AGENT_ID_PATTERN, agent_id):
        raise BadRequest("agent_id: no whitespace, control characters, '/', '\\' or glob characters (*?[])")
    with app.db.transaction() as conn:
        row, token = credentials.issue_agent_token(conn, agent_id, body.name, principal.name, body.expires_in)
        audit.record(conn, principal, "token.create", f"token-{row.id}", kind="agent", agent_id=agent_id)
    return TokenCreated(**token_read(row).model_dump(), token=token)
