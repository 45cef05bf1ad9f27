"""Caller routes for agents: list and get, with online/offline from the heartbeat age."""

from __future__ import annotations

from fastapi import APIRouter

from cloud.api.deps import AdminAuth, DbDep, SettingsDep
from cloud.services import agents as svc
from wire.agents import AgentRead

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], dependencies=[AdminAuth])


@router.get("", response_model=list[AgentRead])
async def list_agents(db: DbDep, settings: SettingsDep) -> list[AgentRead]:
    with db.transaction() as s:
        return [svc.to_read(a, settings.agent_offline_seconds) for a in svc.list_agents(s)]


@router.get("/{agent_id}", response_model=AgentRead)
async def get_agent(agent_id: str, db: DbDep, settings: SettingsDep) -> AgentRead:
    with db.transaction() as s:
        return svc.to_read(svc.get_agent(s, agent_id), settings.agent_offline_seconds)
