"""The agent channel: one WebSocket per agent process carrying claims, heartbeats, log batches and results
as JSON frames (wire.agents.ChannelRequest), several in flight at once, answered by the same operations
as the HTTP routes (cloud/api/agent_calls.py). Long-poll HTTP stays the fallback and the reference.

The token is checked before the upgrade is accepted (a refusal is an HTTP 401/403/404 answer to the
handshake), again before every hand-out of tasks, at the first request after each
`channel_token_recheck_seconds`, and at once for every open channel when tokens are revoked anywhere.
An idle agent sends nothing on its channel: the channel being open (the cloud pings it every
`channel_ping_seconds`) is what records it as seen, and its claim waits up to
`channel_claim_wait_max_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, WebSocket
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from cloud.access import Principal
from cloud.api import agent_calls as calls
from cloud.api.agent_calls import ClaimWatch, Sightings, own
from cloud.api.deps import AppContext, bearer_token
from cloud.api.errors import describe_validation
from cloud.api.strict_json import OFFLOAD_BYTES, JsonRefused, loads_storable
from cloud.services import credentials
from cloud.services.errors import BadRequest, ServiceError
from wire.agents import ChannelHello, ChannelRequest, ClaimRequest, Heartbeat
from wire.credentials import TokenKind
from wire.tasks import Assignment, LogBatch, TaskReport

log = logging.getLogger("tiangong.cloud")
router = APIRouter(prefix="/api/v1", tags=["agent channel"])

EXPIRY_MARGIN_SECONDS = 0.05
"""An open channel's token is checked again this long after it expires."""
FRAME_HEADROOM = 64 * 1024
"""The WebSocket layer takes frames up to max_agent_request_bytes plus this, so a frame just over the
limit is answered with a 413 error frame; a larger one closes the channel (1009) unread."""
_ASSIGNMENTS: TypeAdapter[list[Assignment]] = TypeAdapter(list[Assignment])
_LEADING_ID = re.compile(rb'^\s*\{\s*"id"\s*:\s*(\d{1,16})\s*[,}]')


def _token(websocket: WebSocket) -> bytes:
    token = bearer_token(websocket.headers)
    if token is None:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)")
    return token


def _authorise(app: AppContext, token: bytes, agent_id: str) -> Principal:
    """The agent token's principal, acting for `agent_id`; HTTPException/Forbidden otherwise."""
    principal = app.credentials.resolve(token)
    if principal.kind is not TokenKind.agent:
        raise HTTPException(403, "the agent channel takes an agent token (tga_...)")
    own(principal, agent_id)
    return principal


@router.websocket("/agents/{agent_id}/channel")
async def channel(websocket: WebSocket, agent_id: str) -> None:
    """Authorise, then accept and serve the channel until either side closes it."""
    app: AppContext = websocket.app.state.ctx
    try:
        if not app.settings.channel_enabled:
            raise HTTPException(404, "the agent channel is turned off (channel_enabled): use the HTTP routes")
        token = _token(websocket)
        principal = _authorise(app, token, agent_id)
    except (HTTPException, ServiceError) as exc:
        status, message, _ = _error(exc)
        await websocket.send_denial_response(JSONResponse({"error": message}, status_code=status))
        return
    await websocket.accept()
    await Channel(app, websocket, agent_id, token, principal).serve()


class TokenRefused(Exception):
    """The channel's token no longer passes (revoked, expired, its agent deleted)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Channel:
    """One agent process's open channel: reads frames, runs each request as its own asyncio task."""

    def __init__(
        self, app: AppContext, websocket: WebSocket, agent_id: str, token: bytes, principal: Principal
    ) -> None:
        self.app, self.ws, self.agent_id, self._token = app, websocket, agent_id, token
        self.principal = principal
        self.claimer = websocket.client.host if websocket.client else ""
        self.limit = app.settings.max_agent_request_bytes
        self._loop = asyncio.get_running_loop()
        self._checked_at = self._loop.time()
        self._jobs: set[asyncio.Task[None]] = set()
        self._requests: dict[int, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(app.settings.channel_max_in_flight)
        self.closed = False
        self.watch = ClaimWatch(app, agent_id)
        self.sightings = _sightings(websocket)
        self._expiry: asyncio.TimerHandle | None = None

    async def serve(self) -> None:
        try:
            hello = ChannelHello(max_frame_bytes=self.limit, ping_seconds=self.app.settings.channel_ping_seconds)
            await self._send(orjson.dumps({"hello": hello.model_dump()}))
            self.sightings.arrived(self)
            self._arm_expiry()
            while not self.closed:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("bytes")
                if raw is None:
                    raw = (message.get("text") or "").encode("utf-8", "surrogatepass")
                # At the limit, stop reading until a request ends: the agent's frames wait in the socket.
                await self._slots.acquire()
                job = asyncio.create_task(self._handle(raw))
                self._jobs.add(job)
                job.add_done_callback(self._done)
        except WebSocketDisconnect:
            pass
        finally:
            # Requests in flight end with the channel: a claim still waiting hands out nothing.
            self.closed = True
            if self._expiry is not None:
                self._expiry.cancel()
            self.watch.close()
            self.sightings.left(self)
            jobs = list(self._jobs)
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)

    def _done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        self._slots.release()

    async def _handle(self, raw: bytes) -> None:
        rid = _leading_id(raw)
        try:
            if len(raw) > self.limit:
                raise HTTPException(413, f"body: larger than the {self.limit}-byte limit for this route")
            doc = await self._parse(raw)
            if isinstance(doc, dict) and isinstance(doc.get("id"), int):
                rid = doc["id"]
            req = ChannelRequest.model_validate(doc)
            if req.op == "cancel":
                self._cancel(req.body.get("request"))
                return
            current = asyncio.current_task()
            assert current is not None
            self._requests[req.id] = current
            try:
                payload = await self._run(req)
            finally:
                self._requests.pop(req.id, None)
        except asyncio.CancelledError:
            raise
        except TokenRefused as exc:
            # The token was revoked, expired, or its agent deleted: nothing more is served on this channel.
            await self._reply(rid, {"status": exc.status, "error": exc.message})
            await self._close(4000 + exc.status, exc.message)
            return
        except (ValidationError, JsonRefused, ServiceError, HTTPException, OperationalError) as exc:
            status, message, extra = _error(exc)
            await self._reply(rid, {"status": status, "error": message, **extra})
            return
        except Exception as exc:  # a bug of ours: log it whole, answer without internals
            log.exception("agent channel: unhandled error", exc_info=exc)
            error = f"internal error ({type(exc).__name__}); see the cloud's log"
            await self._reply(rid, {"status": 500, "error": error})
            return
        if req.op == "result":
            # The stored result woke its sync caller (if any): let it answer first. The agent's
            # acknowledgement is not on anyone's critical path, the caller's answer is.
            await asyncio.sleep(0)
        await self._send(b'{"id":%d,"ok":%b}' % (req.id, payload))

    async def _parse(self, raw: bytes) -> Any:
        depth = self.app.settings.max_json_depth
        if len(raw) > OFFLOAD_BYTES:
            return await run_in_threadpool(loads_storable, raw, depth)
        return loads_storable(raw, depth)

    async def _run(self, req: ChannelRequest) -> bytes:
        """The operation's answer as JSON, exactly as its HTTP route answers it."""
        app = self.app
        # Every hand-out of tasks checks the token again (calls.claim before each of its reads, calls.store_result
        # before a piggybacked one): an idle claim, or a result with nothing to hand out, checks nothing.
        self._check(force=False)
        if req.op == "claim":
            claim = ClaimRequest.model_validate(req.body)
            max_wait = app.settings.channel_claim_wait_max_seconds
            got = await calls.claim(
                app,
                self.agent_id,
                claim,
                self.claimer,
                recheck=self._recheck,
                gone=self._gone,
                watch=self.watch,
                max_wait=max_wait,
                checked=False,
            )
            return _ASSIGNMENTS.dump_json(got)
        if req.op == "heartbeat":
            beat = Heartbeat.model_validate(req.body)
            reply = await calls.heartbeat(app, self.agent_id, beat, recheck=self._recheck, seen=self.sightings)
            return reply.model_dump_json().encode()
        if req.task_id is None:
            raise BadRequest(f"task_id: is required for {req.op}")
        if req.op == "logs":
            batch = LogBatch.model_validate(req.body)
            return orjson.dumps(await calls.store_logs(app, req.task_id, batch, self.principal.agent_id))
        report = TaskReport.model_validate(req.body)
        wanted = 0 if self.closed else req.claim
        result = await calls.store_result(
            app,
            req.task_id,
            report,
            self.principal.agent_id,
            wanted,
            self.claimer,
            watch=self.watch,
            recheck=self._recheck,
        )
        return result.model_dump_json().encode()

    def _check(self, force: bool) -> None:
        now = self._loop.time()
        if force or now - self._checked_at >= self.app.settings.channel_token_recheck_seconds:
            try:
                self.principal = _authorise(self.app, self._token, self.agent_id)
            except HTTPException as exc:
                raise TokenRefused(exc.status_code, str(exc.detail)) from None
            except ServiceError as exc:
                raise TokenRefused(exc.status_code, exc.message) from None
            self._checked_at = now

    def revalidate(self) -> bool:
        """Check the token now (credentials changed somewhere, or it expired): a channel that sends nothing,
        as an idle agent's does, is closed as soon as its token is revoked, expired or its agent deleted.
        Whether the channel stays open."""
        if self.closed:
            return False
        try:
            self._check(force=True)
        except TokenRefused as exc:
            job = asyncio.create_task(self._close(4000 + exc.status, exc.message))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)
            return False
        return True

    def _arm_expiry(self) -> None:
        """Check the token again when it expires: an idle agent sends nothing that would have it checked, and
        its channel must not keep it looking online on a token that no longer works."""
        expires = self.principal.expires
        if expires is None or self.closed:
            return
        # A little after: the token is refused from its expiry on, by the wall clock the check reads.
        delay = max(0.0, expires - time.time()) + EXPIRY_MARGIN_SECONDS
        self._expiry = self._loop.call_later(delay, self._expired)

    def _expired(self) -> None:
        if self.revalidate():
            self._arm_expiry()  # still valid: the clock read early, or the token's expiry moved

    def _recheck(self) -> Principal:
        self._check(force=True)
        return self.principal

    async def _gone(self) -> bool:
        return self.closed

    def _cancel(self, rid: Any) -> None:
        """Abandon a request in flight (the agent stopped waiting for it): a claim hands out nothing."""
        job = self._requests.get(rid) if isinstance(rid, int) else None
        if job is not None:
            job.cancel()

    async def _reply(self, rid: int | None, error: dict[str, Any]) -> None:
        await self._send(orjson.dumps({"id": rid, **error}))

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            if self.closed:
                return
            try:
                await self.ws.send_bytes(data)
            except (WebSocketDisconnect, RuntimeError, OSError):
                # Gone: what this answer carried is recovered as for a lost HTTP answer (a claimed task's
                # lease expires and it is retried; a result or log batch is resent).
                self.closed = True

    async def _close(self, code: int, reason: str) -> None:
        self.closed = True
        with contextlib.suppress(RuntimeError, OSError):
            await self.ws.close(code, reason[:120])


async def revalidate_on_revocation_forever(app: AppContext, seen: Sightings) -> None:
    """When tokens are revoked on any replica (credentials.CREDENTIALS_CHANGED), close every open channel whose
    token went: one query for all of them, whatever the fleet's size. (The token cache empties itself on the
    same wake-up: cloud.api.auth.CredentialCache.)"""
    with app.hub.subscribe(credentials.CREDENTIALS_CHANGED) as sub:
        while not app.hub.closing:
            if not await sub.wait(3600):
                continue
            try:
                _close_revoked(app, seen)
            except Exception:  # the next revocation must still be acted on: this task never ends on an error
                log.exception("agent channels: checking tokens after a revocation failed; each is checked later")


def _close_revoked(app: AppContext, seen: Sightings) -> None:
    open_now = [c for c in seen.channels if isinstance(c, Channel) and not c.closed]
    held = {c: c.principal.credential_id for c in open_now}
    ids = {n for n in held.values() if n is not None}
    with app.db.transaction() as conn:
        alive = credentials.existing_ids(conn, ids)
    for channel, credential_id in held.items():
        if credential_id is not None and credential_id not in alive:
            channel.revalidate()


def _sightings(websocket: WebSocket) -> Sightings:
    """The app's one batch of channel agents' sightings (cloud.main writes it a few times per offline period)."""
    seen: Sightings = websocket.app.state.agent_sightings
    return seen


def _leading_id(raw: bytes) -> int | None:
    """The request id at the start of a frame (the agent writes it first), to answer a frame that cannot
    be parsed to the request that sent it."""
    match = _LEADING_ID.match(raw[:64])
    return int(match.group(1)) if match else None


def _error(exc: Exception) -> tuple[int, str, dict[str, Any]]:
    """Status, message and extra fields (next_seq), as the HTTP error handlers would answer."""
    if isinstance(exc, ValidationError):
        return 400, describe_validation(exc), {}
    if isinstance(exc, JsonRefused):
        return 400, str(exc), {}
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.message, exc.extra
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), {}
    log.warning("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
    return 503, "database unavailable; try again shortly", {}
