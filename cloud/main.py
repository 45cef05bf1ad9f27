"""The cloud application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from cloud.api.agent_calls import ClaimWatches, Sightings, record_sightings_forever
from cloud.api.auth import CredentialCache
from cloud.api.deps import AppContext
from cloud.api.errors import install_error_handlers
from cloud.api.fast_create import FastCreate
from cloud.api.fleet_runs import launcher
from cloud.api.openapi import install_openapi
from cloud.api.request_ids import RequestIds, mask_server_log
from cloud.api.routes import (
    agent_channel,
    agent_protocol,
    agents,
    audit,
    files,
    health,
    logs,
    rpc,
    shells,
    tasks,
    tokens,
)
from cloud.api.routes import schedules as schedule_routes
from cloud.api.routes import seed_schedules as seed_schedule_routes
from cloud.background import background_forever, fleet_forever, retention_forever, scheduler_forever
from cloud.db import notify
from cloud.db.engine import Database, migrate
from cloud.hub import Hub
from cloud.metrics import Metrics
from cloud.policy import cloud_policy
from cloud.sealing import load_sealer
from cloud.services.agents import AgentCache, SeenThrottle
from cloud.services.scheduler import Firing
from cloud.settings import CloudSettings, get_settings
from cloud.tokens import load_tokens
from cloud.web import install_web_ui
from files.store import FileStore
from wire import API_VERSION

_TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def _scheduler(settings: CloudSettings, ctx: AppContext) -> Coroutine[Any, Any, None]:
    """The scheduler loop, firing schedules with the checks and defaults a request would get."""
    firing = Firing(
        agents=ctx.agents,
        sealer=ctx.sealer,
        policy=ctx.policy,
        default_expires_in=settings.task_expires_seconds,
        grace_seconds=settings.schedule_missed_grace_seconds,
    )
    return scheduler_forever(ctx.db, firing, settings.schedule_interval_seconds)


def _fleet(settings: CloudSettings, ctx: AppContext) -> Coroutine[Any, Any, None]:
    """The fleet runs' dispatcher loop, starting children as a one-agent create would check their agents."""
    return fleet_forever(ctx.db, ctx.hub, launcher(ctx), settings.fleet_interval_seconds)


def create_app(settings: CloudSettings | None = None) -> FastAPI:
    """Build the app; the database is migrated and tokens resolved when it starts."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        FileStore.prepare_data_dir(settings.data_dir)  # 0700: the database, tokens and keys live there
        hub = Hub()
        db = Database(settings.resolved_database_url(), hub)
        hub.complete = not db.notifies  # until this replica's LISTEN connection is up
        migrate(db.engine)
        db.sync_clock(tries=5)  # before the first request decides a lease
        store = FileStore(settings.data_dir)
        store.clean_tmp()  # partial uploads of a previous run that crashed
        bootstrap = load_tokens(settings.data_dir, settings.admin_token, settings.agent_token)
        sealer = load_sealer(settings.data_dir, settings.secret_key)
        app.state.ctx = AppContext(
            settings=settings,
            db=db,
            hub=hub,
            tokens=bootstrap,
            credentials=CredentialCache(db, bootstrap, settings.token_cache_seconds, settings.bootstrap_registration),
            policy=cloud_policy(settings),
            sealer=sealer,
            seen=SeenThrottle(),
            agents=AgentCache(),
            store=store,
            metrics=Metrics(db, settings.agent_offline_seconds, settings.metrics_final_counts_seconds),
        )
        background = background_forever(db, settings.reaper_interval_seconds, settings.audit_retention_days)
        jobs = [asyncio.create_task(background, name="background")]
        # Agents on this replica's channels, and idle agents' heartbeats, are recorded as seen a few times
        # per offline period, in one UPDATE.
        sightings = app.state.agent_sightings = Sightings(settings.agent_offline_seconds / 6)
        jobs.append(asyncio.create_task(record_sightings_forever(app.state.ctx, sightings), name="sightings"))
        # HTTP claims' subscriptions, kept between an agent's claims; an agent silent this long is offline.
        watches = app.state.claim_watches = ClaimWatches(app.state.ctx, settings.agent_offline_seconds)
        revalidate = agent_channel.revalidate_on_revocation_forever(app.state.ctx, sightings)
        jobs.append(asyncio.create_task(revalidate, name="channel-tokens"))
        jobs.append(asyncio.create_task(_scheduler(settings, app.state.ctx), name="scheduler"))
        jobs.append(asyncio.create_task(_fleet(settings, app.state.ctx), name="fleet"))  # docs/fleet.md
        retention = retention_forever(
            db, settings.retention_days, settings.retention_interval_seconds, settings.retention_batch
        )
        jobs.append(asyncio.create_task(retention, name="retention"))
        if db.notifies:
            jobs.append(asyncio.create_task(notify.listen_forever(db.engine.url, db.origin, hub), name="listen"))
        try:
            yield
        finally:
            watches.close()
            hub.close()
            for job in jobs:
                job.cancel()
            for job in jobs:
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            db.dispose()

    app = FastAPI(
        title="Tiangong",
        version=API_VERSION,
        lifespan=lifespan,
        description="Deploy-and-execute service: queue tasks for agents and follow them.",
        # FastAPI's native OpenTelemetry costs time on every request even with no exporter configured;
        # it is on only when asked for.
        telemetry=None if settings.otel_enabled else _TELEMETRY_OFF,
    )
    install_error_handlers(app)
    install_openapi(app)
    if settings.fast_create and not settings.otel_enabled:  # with tracing on, every create is the route's span
        app.add_middleware(FastCreate)  # inside RequestIds: added first
    app.add_middleware(RequestIds, access_log=settings.access_log)
    mask_server_log()
    for module in (tasks, logs, files, agents, tokens, audit, agent_protocol, agent_channel, rpc, shells, health):
        app.include_router(module.router)
    app.include_router(schedule_routes.router)
    app.include_router(seed_schedule_routes.router)
    install_web_ui(app)
    return app
