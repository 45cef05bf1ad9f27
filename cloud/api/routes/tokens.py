"""Admin routes for credentials: create (shown once), list and revoke API, registration and agent tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from cloud.api.deps import AdminAuth, AppDep, PrincipalDep
from cloud.api.guard import GuardedRoute
from cloud.services import audit, credentials
from cloud.services.present import token_read
from wire.credentials import TokenCreate, TokenCreated, TokenKind, TokenRead

TokenId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The token's id (not the token).")]

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"], dependencies=[AdminAuth], route_class=GuardedRoute)


@router.post("", status_code=201, response_model=TokenCreated)
async def create_token(body: TokenCreate, principal: PrincipalDep, app: AppDep) -> TokenCreated:
    """An API token (`tgp_...`, with a scope) or a registration token (`tgr_...`). The token is in this
    answer only: the cloud keeps its SHA-256."""
    with app.db.transaction() as conn:
        row, token = credentials.create_token(conn, body, principal.name)
        audit.record(conn, principal, "token.create", f"token-{row.id}", kind=body.kind, name=body.name)
    return TokenCreated(**token_read(row).model_dump(), token=token)


@router.get("", response_model=list[TokenRead])
async def list_tokens(
    app: AppDep,
    kind: TokenKind | None = None,
    agent_id: Annotated[str | None, Query(max_length=128)] = None,
) -> list[TokenRead]:
    """Every credential, without its secret: name, kind, scope, expiry, last use."""
    with app.db.transaction() as conn:
        return [token_read(r) for r in credentials.list_tokens(conn, kind, agent_id)]


@router.get("/{token_id}", response_model=TokenRead)
async def get_token(token_id: TokenId, app: AppDep) -> TokenRead:
    with app.db.transaction() as conn:
        return token_read(credentials.get_token(conn, token_id))


@router.delete("/{token_id}", status_code=204)
async def delete_token(token_id: TokenId, principal: PrincipalDep, app: AppDep) -> Response:
    """Revoke: the token stops working at once on every replica (its `credentials` wake-up, published at commit,
    empties each replica's token cache)."""
    with app.db.transaction() as conn:
        row = credentials.get_token(conn, token_id)
        credentials.delete_token(conn, row)
        audit.record(conn, principal, "token.delete", f"token-{row.id}", kind=row.kind, name=row.name)
    return Response(status_code=204)
