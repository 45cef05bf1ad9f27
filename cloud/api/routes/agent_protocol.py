"""Agent-facing routes: register (registration token, or the agent's own token), then long-poll claim,
heartbeat, log batches and results with the agent token, each for the token's own agent only."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from cloud.access import Principal
from cloud.api.agent_output import cleaned_lines, cleaned_report
from cloud.api.deps import AgentAuth, AgentIdPath, AppDep, PrincipalDep, recheck, require_registrant
from cloud.api.guard import GuardedRoute
from cloud.services import agents as agents_svc
from cloud.services import runs as svc
from cloud.services.errors import Forbidden
from wire.agents import AgentRegister, ClaimRequest, Heartbeat, HeartbeatReply, RegisterReply
from wire.tasks import Assignment, LogBatch, TaskReport

router = APIRouter(prefix="/api/v1", tags=["agent protocol"], route_class=GuardedRoute)


def _own(principal: Principal, agent_id: str) -> None:
    """An agent token acts for its own agent id only."""
    if principal.agent_id != agent_id:
        raise Forbidden(f"agent_id: this agent token belongs to agent {principal.agent_id!r}, not {agent_id!r}")


@router.post("/agents/register", response_model=RegisterReply, dependencies=[Depends(require_registrant)])
async def register(body: AgentRegister, principal: PrincipalDep, app: AppDep) -> RegisterReply:
    """With a registration token: register a new agent id and receive its agent token (`agent_token`, shown
    once). With the agent's own token: refresh its registration (hostname, labels, executors)."""
    with app.db.transaction() as conn:
        token = agents_svc.register_agent(conn, body, principal)
    return RegisterReply(
        agent_id=body.agent_id,
        heartbeat_seconds=app.settings.heartbeat_seconds,
        lease_seconds=app.settings.lease_seconds,
        agent_token=token,
    )


@router.post("/agents/{agent_id}/claim", response_model=list[Assignment], dependencies=[AgentAuth])
async def claim(
    agent_id: AgentIdPath, body: ClaimRequest, request: Request, principal: PrincipalDep, app: AppDep
) -> list[Assignment]:
    """Long-poll: answer at once with pending tasks, else wait (woken in-process) up to wait_s. A disabled
    agent is handed nothing."""
    _own(principal, agent_id)
    settings = app.settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait_s, settings.claim_wait_max_seconds)
    claimer = request.client.host if request.client else ""
    first = True
    while True:
        if not first:
            # The agent may have been deleted (and its id registered again) while this claim waited: its
            # tasks, and their secrets, must not go to a token that no longer exists.
            _own(recheck(request), agent_id)
        first = False
        with app.hub.subscribe(f"agent:{agent_id}") as sub:
            with app.db.transaction() as conn:
                agent = app.agents.get(conn, agent_id)
                disabled = agent is not None and agent.disabled
                got = (
                    []
                    if disabled
                    else svc.claim_tasks(
                        conn,
                        agent_id,
                        body.capacity,
                        settings.lease_seconds,
                        settings.max_log_bytes,
                        claimer,
                        touch=app.seen.due(agent_id),
                        sealer=app.sealer,
                    )
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


@router.post("/agents/{agent_id}/heartbeat", response_model=HeartbeatReply, dependencies=[AgentAuth])
async def heartbeat(
    agent_id: AgentIdPath, body: Heartbeat, request: Request, principal: PrincipalDep, app: AppDep
) -> HeartbeatReply:
    """Renew leases; return cancels at once, or wait up to wait_s for one to be requested.

    The wait also covers tasks the agent has not listed yet (started since it sent this beat), so a
    cancel of a task that just started reaches the agent at once rather than at its next beat.
    """
    _own(principal, agent_id)
    with app.hub.subscribe(f"cancel:{agent_id}") as sub:
        with app.db.transaction() as conn:
            cancel = svc.heartbeat(conn, agent_id, body.running, app.settings.lease_seconds, body.tokens)
        if not cancel and body.wait_s > 0 and not app.hub.closing:
            wait = min(body.wait_s, app.settings.lease_seconds / 3)
            if await sub.wait(wait):
                _own(recheck(request), agent_id)
                with app.db.transaction() as conn:
                    cancel = svc.cancels_since(conn, agent_id, body.running, body.tokens)
    return HeartbeatReply(cancel=cancel, lease_seconds=app.settings.lease_seconds)


@router.post("/agent/tasks/{task_id}/logs", dependencies=[AgentAuth])
async def post_logs(task_id: str, body: LogBatch, principal: PrincipalDep, app: AppDep) -> dict[str, int]:
    """Store a batch of log lines; `{"next_seq": n}`. A gap is 409 with the seq to resend from; another
    agent's task is 403."""
    lines = await cleaned_lines(app, task_id, body)
    with app.db.transaction() as conn:
        next_seq = svc.append_logs(
            conn, task_id, body.task_token, lines, app.settings.max_log_bytes, agent_id=principal.agent_id
        )
        return {"next_seq": next_seq}


@router.post("/agent/tasks/{task_id}/result", dependencies=[AgentAuth])
async def post_result(task_id: str, body: TaskReport, principal: PrincipalDep, app: AppDep) -> dict[str, str]:
    """Record the outcome; idempotent for a resend, 409 for a stale token or an incomplete log, 403 for
    another agent's task."""
    report = await cleaned_report(app, task_id, body)
    with app.db.transaction() as conn:
        task = svc.report_result(conn, task_id, report, app.settings.max_log_bytes, agent_id=principal.agent_id)
        return {"id": task_id, "status": task.status}
