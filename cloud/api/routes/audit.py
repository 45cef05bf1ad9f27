"""The audit log, for admins: who created, canceled, retried or deleted what, and token and agent changes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import AdminAuth, AppDep
from cloud.api.guard import GuardedRoute
from cloud.services import audit as svc
from cloud.services.present import audit_read
from wire.credentials import AuditList

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], dependencies=[AdminAuth], route_class=GuardedRoute)


@router.get("", response_model=AuditList)
async def list_audit(
    app: AppDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    actor: Annotated[str | None, Query(max_length=128, description="A token's name.")] = None,
    action: Annotated[
        str | None, Query(max_length=32, description="e.g. `task.create`, or `task` for every task action.")
    ] = None,
    target: Annotated[str | None, Query(max_length=200, description="e.g. `task-12`, an agent id.")] = None,
    since: datetime | None = None,
) -> AuditList:
    """Records newest first; kept `audit_retention_days` (TIANGONG_AUDIT_RETENTION_DAYS)."""
    with app.db.transaction() as conn:
        rows, total = svc.list_audit(conn, page, page_size, actor=actor, action=action, target=target, since=since)
    return AuditList(items=[audit_read(r) for r in rows], total=total, page=page, page_size=page_size)
