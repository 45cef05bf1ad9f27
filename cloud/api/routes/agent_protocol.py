"""Agent-facing routes (agent token): register, long-poll claim, heartbeat, log batches, results."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from cloud.api.agent_output import cleaned_lines, cleaned_report
from cloud.api.deps import AgentAuth, AppDep
from cloud.api.guard import GuardedRoute
from cloud.services import agents as agents_svc
from cloud.services import runs as svc
from wire.agents import AgentRegister, ClaimRequest, Heartbeat, HeartbeatReply, RegisterReply
from wire.tasks import Assignment, LogBatch, TaskReport, parse_task_id

router = APIRouter(prefix="/api/v1", tags=["agent protocol"], dependencies=[AgentAuth], route_class=GuardedRoute)


@router.post("/agents/register", response_model=RegisterReply)
async def register(body: AgentRegister, app: AppDep) -> RegisterReply:
    with app.db.transaction() as conn:
        agents_svc.register_agent(conn, body)
    return RegisterReply(
        agent_id=body.agent_id,
        heartbeat_seconds=app.settings.heartbeat_seconds,
        lease_seconds=app.settings.lease_seconds,
    )


@router.post("/agents/{agent_id}/claim", response_model=list[Assignment])
async def claim(agent_id: str, body: ClaimRequest, request: Request, app: AppDep) -> list[Assignment]:
    """Long-poll: answer at once with pending tasks, else wait (woken in-process) up to wait_s."""
    settings = app.settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait_s, settings.claim_wait_max_seconds)
    claimer = request.client.host if request.client else ""
    while True:
        with app.hub.subscribe(f"agent:{agent_id}") as sub:
            with app.db.transaction() as conn:
                got = svc.claim_tasks(
                    conn,
                    agent_id,
                    body.capacity,
                    settings.lease_seconds,
                    settings.max_log_bytes,
                    claimer,
                    touch=app.seen.due(agent_id),
                    sealer=app.sealer,
                )
            remaining = deadline - loop.time()
            if got or remaining <= 0 or app.hub.closing:
                return got
            # Re-read at least every recheck_seconds: a wake-up from another replica may have been lost.
            await sub.wait(min(remaining, settings.recheck_seconds))
        # Claiming for a caller that hung up (an agent stopping) would strand its tasks until their
        # lease ran out.
        if await request.is_disconnected():
            return []


@router.post("/agents/{agent_id}/heartbeat", response_model=HeartbeatReply)
async def heartbeat(agent_id: str, body: Heartbeat, app: AppDep) -> HeartbeatReply:
    """Renew leases; return cancels at once, or wait up to wait_s for one to be requested.

    The wait also covers tasks the agent has not listed yet (started since it sent this beat), so a
    cancel of a task that just started reaches the agent at once rather than at its next beat.
    """
    with app.hub.subscribe(f"cancel:{agent_id}") as sub:
        with app.db.transaction() as conn:
            cancel = svc.heartbeat(conn, agent_id, body.running, app.settings.lease_seconds, body.tokens)
        if not cancel and body.wait_s > 0 and not app.hub.closing:
            wait = min(body.wait_s, app.settings.lease_seconds / 3)
            if await sub.wait(wait):
                ids = [n for n in (parse_task_id(r) for r in body.running) if n is not None]
                tokens = {n: body.tokens[r] for r in body.running if r in body.tokens and (n := parse_task_id(r))}
                with app.db.transaction() as conn:
                    cancel = svc.pending_cancels(conn, agent_id, ids, tokens)
                    cancel += svc.requested_cancels(conn, agent_id, exclude=ids)
    return HeartbeatReply(cancel=cancel, lease_seconds=app.settings.lease_seconds)


@router.post("/agent/tasks/{task_id}/logs")
async def post_logs(task_id: str, body: LogBatch, app: AppDep) -> dict[str, int]:
    """Store a batch of log lines; `{"next_seq": n}`. A gap is 409 with the seq to resend from."""
    lines = await cleaned_lines(app, task_id, body)
    with app.db.transaction() as conn:
        return {"next_seq": svc.append_logs(conn, task_id, body.task_token, lines, app.settings.max_log_bytes)}


@router.post("/agent/tasks/{task_id}/result")
async def post_result(task_id: str, body: TaskReport, app: AppDep) -> dict[str, str]:
    """Record the outcome; idempotent for a resend, 409 for a stale token or an incomplete log."""
    report = await cleaned_report(app, task_id, body)
    with app.db.transaction() as conn:
        task = svc.report_result(conn, task_id, report, app.settings.max_log_bytes)
        return {"id": task_id, "status": task.status}
