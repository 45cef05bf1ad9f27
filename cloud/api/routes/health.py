"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import AppDep
from cloud.api.guard import GuardedRoute

router = APIRouter(tags=["health"], route_class=GuardedRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(app: AppDep) -> Response:
    """Prometheus text format. Built in a worker thread: the counts by status and type read every task, a
    second on a million of them, which must not stall the event loop."""
    body = await run_in_threadpool(generate_latest, app.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", response_model=None)
async def readyz(app: AppDep) -> dict[str, str] | JSONResponse:
    """The database answers."""
    try:
        with app.db.transaction() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means not ready
        return JSONResponse({"error": f"database unavailable: {type(exc).__name__}"}, status_code=503)
    return {"status": "ready"}
