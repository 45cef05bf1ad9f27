"""Registration: the configured token is exchanged for the agent's own, which is saved and sent from then
on; a saved agent token the cloud refuses gives way to the configured one; other refusals stop the agent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from agent.client import CloudClient, CloudUnavailable, Rejected
from agent.identity import Identity
from agent.registration import register
from wire.agents import AgentRegister, RegisterReply

REG = AgentRegister(agent_id="a1", hostname="h", labels={}, version="1", executors=["shell"], max_concurrency=2)


@dataclass
class FakeRegistrar:
    """Stands in for CloudClient's registration: takes `accepted` tokens, hands out `issue`."""

    accepted: set[str]
    issue: str | None = "tga_new"
    unavailable: int = 0
    token: str = ""
    tried: list[str] = field(default_factory=list)

    def use_token(self, token: str) -> None:
        self.token = token

    async def register(self, reg: AgentRegister) -> RegisterReply:
        if self.unavailable:
            self.unavailable -= 1
            raise CloudUnavailable("connection refused")
        self.tried.append(self.token)
        if self.token not in self.accepted:
            raise Rejected(401, "invalid token")
        return RegisterReply(agent_id=reg.agent_id, heartbeat_seconds=5, lease_seconds=30, agent_token=self.issue)


def sign_in(cloud: FakeRegistrar, identity: Identity) -> tuple[RegisterReply, int]:
    alive: list[None] = []

    async def scenario() -> RegisterReply:
        return await register(cast(CloudClient, cloud), identity, REG, asyncio.Event(), lambda: alive.append(None))

    return asyncio.run(scenario()), len(alive)


def test_the_agent_token_received_is_saved_and_used(tmp_path: Path) -> None:
    cloud = FakeRegistrar(accepted={"tgr_reg"}, unavailable=1)
    reply, alive = sign_in(cloud, Identity(tmp_path, "http://c", "a1", "tgr_reg"))
    assert reply.heartbeat_seconds == 5 and cloud.token == "tga_new" and alive == 2  # once per try
    assert Identity(tmp_path, "http://c", "a1", "tgr_reg").first_token() == "tga_new"


def test_a_refused_saved_token_gives_way_to_the_configured_one(tmp_path: Path) -> None:
    Identity(tmp_path, "http://c", "a1", "tgr_reg").save("tga_old")
    cloud = FakeRegistrar(accepted={"tgr_reg"})
    identity = Identity(tmp_path, "http://c", "a1", "tgr_reg")
    sign_in(cloud, identity)
    assert cloud.tried == ["tga_old", "tgr_reg"] and identity.saved == "tga_new"


def test_a_refused_configured_token_stops_the_agent(tmp_path: Path) -> None:
    cloud = FakeRegistrar(accepted=set())
    with pytest.raises(Rejected, match="401"):
        sign_in(cloud, Identity(tmp_path, "http://c", "a1", "tgr_bad"))
    assert cloud.tried == ["tgr_bad"] and not (tmp_path / "identity.json").exists()
