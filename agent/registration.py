"""Registering with the cloud: the configured token is exchanged for the agent's own (saved for the next
start), and a saved agent token the cloud no longer takes gives way to the configured one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agent.client import CloudClient, Rejected, retrying
from agent.identity import Identity
from wire.agents import AgentRegister, RegisterReply

log = logging.getLogger("tiangong.agent")


async def register(
    client: CloudClient, identity: Identity, reg: AgentRegister, stop: asyncio.Event, alive: Callable[[], None]
) -> RegisterReply:
    """Register `reg` (retrying while the cloud is out of reach, until `stop`); the client then sends the
    agent token. Rejected propagates when no token is taken; `alive` is called before every try."""

    def attempt() -> Awaitable[RegisterReply]:
        alive()  # no heartbeat runs before the first registration: stay alive meanwhile
        return client.register(reg)

    token = identity.first_token()
    client.use_token(token)
    try:
        reply = await retrying(attempt, "register", stop)
    except Rejected as exc:
        if exc.status != 401 or not identity.can_fall_back(token):
            raise
        # The saved agent token no longer works (the agent was deleted, or the token revoked): register
        # anew with the configured registration token.
        log.warning("saved agent token refused (%s); registering again with the configured token", exc.message)
        identity.forget()
        client.use_token(identity.configured)
        reply = await retrying(attempt, "register", stop)
    if reply.agent_token:
        identity.save(reply.agent_token)
        client.use_token(reply.agent_token)
        log.info("received the agent token for %s (saved in %s)", reg.agent_id, identity.path)
    return reply
