"""Agent-facing routes: register (registration token, or the agent's own token), then long-poll claim,
heartbeat, log batches and results with the agent token, each for the token's own agent only. The
operations themselves are in cloud/api/agent_calls.py, shared with the channel (routes/agent_channel.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from cloud.api import agent_calls as calls
from cloud.api.agent_calls import own
from cloud.api.deps import AgentAuth, AgentIdPath, AppDep, PrincipalDep, recheck, require_registrant
from cloud.api.guard import GuardedRoute
from cloud.services import agents as agents_svc
from wire.agents import AgentRegister, ClaimRequest, Heartbeat, HeartbeatReply, RegisterReply, ResultReply
from wire.tasks import Assignment, LogBatch, TaskReport

router = APIRouter(prefix="/api/v1", tags=["agent protocol"], route_class=GuardedRoute)


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
        claims_show_online=True,
    )


@router.post("/agents/{agent_id}/claim", response_model=list[Assignment], dependencies=[AgentAuth])
async def claim(
    agent_id: AgentIdPath, body: ClaimRequest, request: Request, principal: PrincipalDep, app: AppDep
) -> list[Assignment]:
    """Long-poll: answer at once with pending tasks, else wait (woken in-process) up to wait_s. A disabled
    agent is handed nothing."""
    own(principal, agent_id)
    claimer = request.client.host if request.client else ""
    # The claim in flight shows the agent online (an idle agent sends no heartbeats), until it is answered or
    # the agent hangs up: a dead agent's claim must not keep it online for the rest of its wait.
    seen: calls.Sightings = request.app.state.agent_sightings
    watches: calls.ClaimWatches = request.app.state.claim_watches
    in_flight = calls.ClaimInFlight(agent_id)
    seen.arrived(in_flight)
    # Claiming for a caller that hung up (an agent stopping) would strand its tasks until their lease ran out.
    gone = request.is_disconnected
    try:
        with watches.borrowed(agent_id) as watch:
            waiting = calls.claim(
                app, agent_id, body, claimer, watch=watch, recheck=lambda: recheck(request), gone=gone, checked=True
            )
            return await calls.until_hung_up(request, waiting)
    finally:
        seen.left(in_flight)


@router.post("/agents/{agent_id}/heartbeat", response_model=HeartbeatReply, dependencies=[AgentAuth])
async def heartbeat(
    agent_id: AgentIdPath, body: Heartbeat, request: Request, principal: PrincipalDep, app: AppDep
) -> HeartbeatReply:
    """Renew leases; return cancels at once, or wait up to wait_s for one to be requested (also for a
    task started since the beat was sent)."""
    own(principal, agent_id)
    # An idle agent's beat (nothing running) is batched with the others' sightings: no write of its own.
    seen = request.app.state.agent_sightings
    return await calls.heartbeat(app, agent_id, body, recheck=lambda: recheck(request), seen=seen)


@router.post("/agent/tasks/{task_id}/logs", dependencies=[AgentAuth])
async def post_logs(task_id: str, body: LogBatch, principal: PrincipalDep, app: AppDep) -> dict[str, int]:
    """Store a batch of log lines; `{"next_seq": n}`. A gap is 409 with the seq to resend from; another
    agent's task is 403."""
    return await calls.store_logs(app, task_id, body, principal.agent_id)


@router.post("/agent/tasks/{task_id}/result", response_model=ResultReply, dependencies=[AgentAuth])
async def post_result(
    task_id: str,
    body: TaskReport,
    request: Request,
    principal: PrincipalDep,
    app: AppDep,
    claim: Annotated[
        int,
        Header(
            alias="Tiangong-Claim",
            ge=0,
            le=1000,
            description="The agent's free slots: the answer's `assignments` brings up to this many of its next tasks.",
        ),
    ] = 0,
) -> ResultReply:
    """Record the outcome; idempotent for a resend, 409 for a stale token or an incomplete log, 403 for
    another agent's task. With the header `Tiangong-Claim: n`, `assignments` holds up to n of the agent's
    next tasks (a header, so the request line stays the route's own)."""
    claimer = request.client.host if request.client else ""
    return await calls.store_result(app, task_id, body, principal.agent_id, claim, claimer)
