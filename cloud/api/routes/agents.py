"""Caller routes for agents: list and get, with online/offline from the heartbeat age."""

from __future__ import annotations

from fastapi import APIRouter

from cloud.api.deps import AdminAuth, AppDep
from cloud.api.guard import GuardedRoute
from cloud.services import agents as svc
from wire.agents import AgentRead

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], dependencies=[AdminAuth], route_class=GuardedRoute)


@router.get("", response_model=list[AgentRead])
async def list_agents(app: AppDep) -> list[AgentRead]:
    with app.db.transaction() as conn:
        return [svc.to_read(a, app.settings.agent_offline_seconds) for a in svc.list_agents(conn)]


@router.get("/{agent_id}", response_model=AgentRead)
async def get_agent(agent_id: str, app: AppDep) -> AgentRead:
    with app.db.transaction() as conn:
        return svc.to_read(svc.get_agent(conn, agent_id), app.settings.agent_offline_seconds)
