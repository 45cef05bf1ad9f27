"""Dependencies shared by the routers: the app's context and the token each kind of route takes.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a hop that cost more
than the database work of a request. The process-wide objects come as one `AppContext`, since every
dependency FastAPI resolves costs time on each request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

from cloud.access import Principal
from cloud.api.auth import CredentialCache, unauthorized
from cloud.api.waiting import WaitingClaims
from cloud.db.engine import Database
from cloud.hub import Hub
from cloud.metrics import Metrics
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache, SeenThrottle
from cloud.settings import CloudSettings
from cloud.tokens import Tokens
from executors.policy import CommandPolicy
from files.store import FileStore
from wire.credentials import TokenKind


@dataclass(frozen=True)
class AppContext:
    """What one cloud process holds while it runs."""

    settings: CloudSettings
    db: Database
    hub: Hub
    tokens: Tokens
    credentials: CredentialCache
    policy: CommandPolicy
    sealer: Sealer
    seen: SeenThrottle
    agents: AgentCache
    store: FileStore
    metrics: Metrics
    waiting: WaitingClaims = field(default_factory=WaitingClaims)


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def bearer_token(headers: Mapping[str, str]) -> bytes | None:
    """The `Authorization: Bearer` token as bytes, or None: a header may carry any byte (Starlette decodes
    it as latin-1), and `secrets.compare_digest` refuses non-ASCII text with a TypeError."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip().encode("latin-1") if scheme.lower() == "bearer" and token.strip() else None


def _bearer(request: Request) -> bytes:
    token = bearer_token(request.headers)
    if token is None:
        raise unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return token


async def authenticate(request: Request) -> Principal:
    """The principal behind the request's bearer token (401 if none), resolved once per request."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = request.app.state.ctx.credentials.resolve(_bearer(request))
        request.state.principal = principal
    return principal


def recheck(request: Request) -> Principal:
    """The request's token resolved again, for a request that waits (a claim, a heartbeat, a log follow):
    when the token was revoked or its agent deleted meanwhile, 401 instead of carrying on."""
    principal: Principal = request.app.state.ctx.credentials.resolve(_bearer(request))
    return principal


async def require_caller(request: Request) -> None:
    """Callers: the admin token or an API token (tgp_); each route checks the token's scope."""
    if not (await authenticate(request)).is_caller:
        raise HTTPException(403, "this route takes a caller token (the admin token or an API token, tgp_...)")


async def require_admin(request: Request) -> None:
    """Token, agent and audit administration: the admin token, or an API token granted `admin`."""
    principal = await authenticate(request)
    if not principal.is_admin:
        raise HTTPException(403, f"token {principal.name!r} is not an admin token")


async def require_caller_or_agent(request: Request) -> None:
    """Reading a file: a caller with files:read, or an agent token for a file its tasks name."""
    principal = await authenticate(request)
    if not (principal.is_caller or principal.kind is TokenKind.agent):
        raise HTTPException(403, "a registration token only registers agents")


async def require_agent(request: Request) -> None:
    """The agent protocol: an agent token (tga_), acting for its own agent id only."""
    if (await authenticate(request)).kind is not TokenKind.agent:
        raise HTTPException(
            403, "this route takes an agent token (tga_...): register with a registration token to receive one"
        )


async def require_registrant(request: Request) -> None:
    """Registering: a registration token (tgr_, or the bootstrap one), or the agent's own agent token."""
    if (await authenticate(request)).kind not in (TokenKind.registration, TokenKind.agent):
        raise HTTPException(403, "registering takes a registration token (tgr_...) or the agent's own token")


AUTH_CHECKS = frozenset({require_caller, require_admin, require_caller_or_agent, require_agent, require_registrant})
"""The token checks that GuardedRoute runs before reading a body (see cloud.api.guard)."""

AppDep = Annotated[AppContext, Depends(get_context)]
AgentIdPath = Annotated[str, Path(min_length=1, max_length=128, description="The agent id.")]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
CallerAuth = Depends(require_caller)
AdminAuth = Depends(require_admin)
AgentAuth = Depends(require_agent)
