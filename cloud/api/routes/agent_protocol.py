"""Agent-facing routes (agent token): register, long-poll claim, heartbeat, log batches, results."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from cloud.api.deps import AgentAuth, DbDep, HubDep, SettingsDep
from cloud.services import agents as agents_svc
from cloud.services import tasks as svc
from wire.agents import AgentRegister, ClaimRequest, Heartbeat, HeartbeatReply, RegisterReply
from wire.tasks import Assignment, LogBatch, TaskReport, parse_task_id

router = APIRouter(prefix="/api/v1", tags=["agent protocol"], dependencies=[AgentAuth])


@router.post("/agents/register", response_model=RegisterReply)
async def register(body: AgentRegister, db: DbDep, settings: SettingsDep) -> RegisterReply:
    with db.transaction() as s:
        agents_svc.register_agent(s, body)
    return RegisterReply(
        agent_id=body.agent_id,
        heartbeat_seconds=settings.heartbeat_seconds,
        lease_seconds=settings.lease_seconds,
    )


@router.post("/agents/{agent_id}/claim", response_model=list[Assignment])
async def claim(
    agent_id: str, body: ClaimRequest, request: Request, db: DbDep, hub: HubDep, settings: SettingsDep
) -> list[Assignment]:
    """Long-poll: answer at once with pending tasks, else wait (woken in-process) up to wait_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait_s, settings.claim_wait_max_seconds)
    claimer = request.client.host if request.client else ""
    while True:
        with hub.subscribe(f"agent:{agent_id}") as sub:
            with db.transaction() as s:
                got = svc.claim_tasks(
                    s, agent_id, body.capacity, settings.lease_seconds, settings.max_log_bytes, claimer
                )
            remaining = deadline - loop.time()
            if got or remaining <= 0 or hub.closing:
                return got
            await sub.wait(remaining)
        # Claiming for a caller that hung up would strand the tasks until their lease ran out.
        if await request.is_disconnected():
            return []


@router.post("/agents/{agent_id}/heartbeat", response_model=HeartbeatReply)
async def heartbeat(agent_id: str, body: Heartbeat, db: DbDep, hub: HubDep, settings: SettingsDep) -> HeartbeatReply:
    """Renew leases; return cancels at once, or wait up to wait_s for one to be requested."""
    with hub.subscribe(f"cancel:{agent_id}") as sub:
        with db.transaction() as s:
            cancel = svc.heartbeat(s, agent_id, body.running, settings.lease_seconds)
        if not cancel and body.running and body.wait_s > 0 and not hub.closing:
            wait = min(body.wait_s, settings.lease_seconds / 3)
            if await sub.wait(wait):
                ids = [n for n in (parse_task_id(r) for r in body.running) if n is not None]
                with db.transaction() as s:
                    cancel = svc.pending_cancels(s, agent_id, ids)
    return HeartbeatReply(cancel=cancel, lease_seconds=settings.lease_seconds)


@router.post("/agent/tasks/{task_id}/logs")
async def post_logs(task_id: str, body: LogBatch, db: DbDep) -> dict[str, int]:
    """Store a batch of log lines; `{"next_seq": n}`. A gap is 409 with the seq to resend from."""
    with db.transaction() as s:
        return {"next_seq": svc.append_logs(s, task_id, body.task_token, body.lines)}


@router.post("/agent/tasks/{task_id}/result")
async def post_result(task_id: str, body: TaskReport, db: DbDep) -> dict[str, str]:
    """Record the outcome; idempotent for a resend, 409 for a stale token or an incomplete log."""
    with db.transaction() as s:
        task = svc.report_result(s, task_id, body)
        return {"id": task_id, "status": task.status}
