"""Dependencies shared by the routers: the app's context and the two kinds of bearer token.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a hop that cost more
than the database work of a request. The process-wide objects come as one `AppContext`, since every
dependency FastAPI resolves costs time on each request.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from cloud.db.engine import Database
from cloud.hub import Hub
from cloud.metrics import Metrics
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache, SeenThrottle
from cloud.settings import CloudSettings
from cloud.tokens import Tokens
from files.store import FileStore


@dataclass(frozen=True)
class AppContext:
    """What one cloud process holds while it runs."""

    settings: CloudSettings
    db: Database
    hub: Hub
    tokens: Tokens
    sealer: Sealer
    seen: SeenThrottle
    agents: AgentCache
    store: FileStore
    metrics: Metrics


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def _bearer(request: Request) -> bytes:
    """The bearer token as bytes: a header may carry any byte (Starlette decodes it as latin-1), and
    `secrets.compare_digest` refuses non-ASCII text with a TypeError."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401, "missing bearer token (Authorization: Bearer <token>)", headers={"WWW-Authenticate": "Bearer"}
        )
    return token.strip().encode("latin-1")


def _same(given: bytes, expected: str) -> bool:
    return secrets.compare_digest(given, expected.encode("utf-8"))


async def require_admin(request: Request) -> None:
    """Callers: the admin token."""
    if not _same(_bearer(request), request.app.state.ctx.tokens.admin):
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})


async def require_admin_or_agent(request: Request) -> None:
    """Reads agents need too (a task's file): either token."""
    token, tokens = _bearer(request), request.app.state.ctx.tokens
    if not (_same(token, tokens.admin) or _same(token, tokens.agent)):
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})


async def require_agent(request: Request) -> None:
    """Agents: the agent token."""
    if not _same(_bearer(request), request.app.state.ctx.tokens.agent):
        raise HTTPException(401, "invalid agent token", headers={"WWW-Authenticate": "Bearer"})


AUTH_CHECKS = frozenset({require_admin, require_admin_or_agent, require_agent})
"""The token checks that GuardedRoute runs before reading a body (see cloud.api.guard)."""

AppDep = Annotated[AppContext, Depends(get_context)]
AdminAuth = Depends(require_admin)
AgentAuth = Depends(require_agent)
