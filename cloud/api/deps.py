"""Dependencies shared by the routers: settings, database, hub, and the two kinds of bearer token."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from cloud.db.engine import Database
from cloud.hub import Hub
from cloud.settings import CloudSettings
from cloud.tokens import Tokens


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def get_app_settings(request: Request) -> CloudSettings:
    settings: CloudSettings = request.app.state.settings
    return settings


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401,
            "missing bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


def require_admin(request: Request) -> None:
    """Callers: the admin token."""
    tokens: Tokens = request.app.state.tokens
    if not secrets.compare_digest(_bearer(request), tokens.admin):
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})


def require_agent(request: Request) -> None:
    """Agents: the agent token."""
    tokens: Tokens = request.app.state.tokens
    if not secrets.compare_digest(_bearer(request), tokens.agent):
        raise HTTPException(401, "invalid agent token", headers={"WWW-Authenticate": "Bearer"})


DbDep = Annotated[Database, Depends(get_db)]
HubDep = Annotated[Hub, Depends(get_hub)]
SettingsDep = Annotated[CloudSettings, Depends(get_app_settings)]
AdminAuth = Depends(require_admin)
AgentAuth = Depends(require_agent)
