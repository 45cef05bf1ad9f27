"""The agent protocol's operations (claim, heartbeat, log batch, result), one body of code each, shared
by the HTTP routes (routes/agent_protocol.py) and the channel (routes/agent_channel.py): the two
transports validate with the same wire models and cannot drift."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection
from starlette.requests import Request

from cloud.access import Principal
from cloud.api.agent_output import cleaned_lines, cleaned_report
from cloud.api.deps import AppContext
from cloud.api.waiting import WaitingClaim
from cloud.db import events
from cloud.services import runs as svc
from cloud.services.errors import Forbidden
from cloud.services.transitions import TaskRow
from wire.agents import ClaimRequest, Heartbeat, HeartbeatReply, ResultReply
from wire.tasks import Assignment, LogBatch, TaskReport, format_task_id

log = logging.getLogger("tiangong.cloud")
T = TypeVar("T")


class OpenChannel(Protocol):
    """What Sightings needs of an open channel."""

    agent_id: str


Recheck = Callable[[], Principal]
"""The caller's token resolved again (401 when revoked or its agent deleted)."""
Gone = Callable[[], Awaitable[bool]]
"""True when the caller hung up: tasks handed to it would wait out their lease."""


def own(principal: Principal, agent_id: str) -> None:
    """An agent token acts for its own agent id only."""
    if principal.agent_id != agent_id:
        raise Forbidden(f"agent_id: this agent token belongs to agent {principal.agent_id!r}, not {agent_id!r}")


class ClaimWatch:
    """A channel's lasting subscription to its agent's wake-ups. A claim whose channel's last read found
    nothing, with no wake-up since, waits without reading again: an idle agent renewing its claim costs
    no query. It still reads when the hub may miss wake-ups, and, where another replica's wake-up comes
    through a listener that could die silently (PostgreSQL), every `idle_recheck_seconds`."""

    def __init__(self, app: AppContext, agent_id: str) -> None:
        self.sub = app.hub.subscribe(f"agent:{agent_id}")
        self._app = app
        self._empty_at: float | None = None

    def must_read(self, now: float) -> bool:
        if self._empty_at is None or self.sub.pending or not self._app.hub.complete:
            return True
        if not self._app.db.notifies:
            # One process (SQLite): every wake-up is published in this process and cannot be lost, so
            # the last empty read stays true until one arrives.
            return False
        return now - self._empty_at >= self._app.settings.idle_recheck_seconds

    def unsure(self) -> None:
        """A wake-up may have been cleared unread (a claim woken but ended before it read, or answered with tasks
        handed to it without a read of its own): the next claim reads."""
        self._empty_at = None

    def read(self, now: float, more: bool) -> None:
        """Note a read, called right after its transaction with no await between: every wake-up published
        so far came from a commit that read saw (or from its own transaction, such as a full claim's "maybe
        more"), so it is cleared. A read that took fewer tasks than it could (`more` False) left the queue
        empty: the next claim need not read until woken."""
        self.sub.clear()
        self._empty_at = None if more else now

    def close(self) -> None:
        self.sub.__exit__(None, None, None)


class ClaimWatches:
    """HTTP claims' ClaimWatch, one per agent, kept between the agent's claims: an idle agent's long-polls are
    separate requests, and without a lasting subscription each would have to read the queue anew (the
    channel keeps its watch for as long as it is open). A watch not used for `keep_seconds` is closed, so
    an agent that went away leaves nothing behind; a second claim of an agent while its first is in
    flight (an agent restarted) goes without one."""

    def __init__(self, app: AppContext, keep_seconds: float) -> None:
        self._app = app
        self._keep = keep_seconds
        self._idle: dict[str, tuple[ClaimWatch, float]] = {}
        """Watches between claims, oldest release first (a borrowed one is put back at the end)."""
        self._busy: set[str] = set()

    @contextlib.contextmanager
    def borrowed(self, agent_id: str) -> Iterator[ClaimWatch | None]:
        if agent_id in self._busy:
            yield None
            return
        kept = self._idle.pop(agent_id, None)
        watch = kept[0] if kept is not None else ClaimWatch(self._app, agent_id)
        self._busy.add(agent_id)
        try:
            yield watch
        finally:
            self._busy.discard(agent_id)
            now = asyncio.get_running_loop().time()
            self._idle[agent_id] = (watch, now)
            self._close_unused(now)

    def _close_unused(self, now: float) -> None:
        while self._idle:
            agent_id, (watch, released) = next(iter(self._idle.items()))
            if now - released < self._keep:
                return
            del self._idle[agent_id]
            watch.close()

    def close(self) -> None:
        for watch, _ in self._idle.values():
            watch.close()
        self._idle.clear()


@dataclass(eq=False)
class ClaimInFlight:
    """An HTTP claim long-poll being waited on: like an open channel, it shows its agent online."""

    agent_id: str


async def until_hung_up(request: Request, work: Coroutine[Any, Any, T]) -> T | list[Any]:
    """`work`'s result, or [] once the client has hung up (`work` is then canceled: nobody reads its answer).

    A long-poll otherwise notices a client that went away only when woken, up to its whole wait later."""
    job = asyncio.ensure_future(work)
    hangup = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((job, hangup), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
    if job.done():
        return job.result()
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    return []


async def _disconnected(request: Request) -> None:
    """Return once the client disconnects (the body was read already: nothing else can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Sightings:
    """Agents on this replica's channels, recorded as seen for all of them in one UPDATE every `every`
    seconds (cloud.main's sightings job): every agent whose channel is open (an idle agent on a channel
    sends no heartbeats; the cloud's pings close a channel whose agent stopped answering) or whose HTTP
    claim is in flight (ClaimInFlight, ended when the agent hangs up), and any agent heard from by an idle
    heartbeat. 1,000 idle agents would otherwise write a row each every few seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._ids: set[str] = set()
        self.channels: set[OpenChannel] = set()
        """This replica's open channels and HTTP claims in flight (the routes add and remove their own)."""

    def arrived(self, link: OpenChannel) -> None:
        """An open channel or an HTTP claim in flight: its agent is seen for as long as it lasts."""
        self.channels.add(link)

    def left(self, link: OpenChannel) -> None:
        """It closed or ended: its agent was there until now, and is written once more with the next batch."""
        self.channels.discard(link)
        self._ids.add(link.agent_id)

    def note(self, agent_id: str) -> None:
        """Remember the agent, heard from now, for the next batch."""
        self._ids.add(agent_id)

    def take(self) -> set[str]:
        """The agents to record as seen now: those heard from since the last batch, and every open channel's."""
        ids, self._ids = self._ids | {c.agent_id for c in self.channels}, set()
        return ids


async def record_sightings_forever(app: AppContext, seen: Sightings) -> None:
    """Write `seen`'s batch every `seen.every` seconds until canceled (one UPDATE for all open channels)."""
    while True:
        await asyncio.sleep(seen.every)
        ids = seen.take()
        if not ids:
            continue
        try:
            # In the loop's thread, as the requests' transactions are: the hub is not thread-safe.
            with app.db.transaction() as conn:
                svc.record_seen(conn, ids)
        except Exception:
            log.exception("agent sightings: recording %d agents as seen failed; retrying next pass", len(ids))


def hand_out(
    app: AppContext,
    conn: Connection,
    agent_id: str,
    capacity: int,
    claimer: str,
    touch: bool,
    rows: dict[int, TaskRow] | None = None,
) -> list[Assignment]:
    """Up to `capacity` pending tasks of the agent, moved to running; none for a disabled agent. `rows`:
    as svc.claim_tasks'."""
    agent = app.agents.get(conn, agent_id)
    if agent is not None and agent.disabled:
        return []
    lease, max_log = app.settings.lease_seconds, app.settings.max_log_bytes
    return svc.claim_tasks(conn, agent_id, capacity, lease, max_log, claimer, touch=touch, sealer=app.sealer, rows=rows)


def waiting_claim(app: AppContext, agent_id: str) -> WaitingClaim | None:
    """Before a create's transaction: one of the agent's claims waiting on this replica, taken from the others,
    whose token still acts for the agent. Checked here, outside any transaction: the check may read and
    write credentials, which inside a create's open SQLite transaction would wait on that transaction's own
    lock. None when no claim waits here, or its token was refused (the create's commit wakes the claim all
    the same, and it refuses itself). A claim taken and not handed anything is `put_back`."""
    waiting = app.waiting.take(agent_id)
    if waiting is None:
        return None
    try:
        own(waiting.recheck(), agent_id)
    except Exception:  # refused (401/403), or the check failed: the claim finds out itself when woken
        return None
    return waiting


def hand_to(app: AppContext, conn: Connection, waiting: WaitingClaim, task_id: int) -> TaskRow | None:
    """In the create's transaction, after its INSERT of task `task_id`: the agent's pending tasks (that one
    among them) claimed for `waiting`, which gets them when the transaction commits; a disabled agent's get
    none. Not touched: an agent whose claim waits is seen through it (Sightings), as its channel's claims are.
    Returns task `task_id`'s row as the hand-out left it (running, or failed if it could not be handed out),
    None if it was not claimed: what the create answers is the task as it is."""
    rows: dict[int, TaskRow] = {}
    handed = hand_out(app, conn, waiting.agent_id, waiting.capacity, waiting.claimer, touch=False, rows=rows)
    if handed:
        events.after_commit(conn, functools.partial(waiting.hand, handed, format_task_id(task_id)))
    return rows.get(task_id)


def put_back(app: AppContext, waiting: WaitingClaim) -> None:
    """A claim `waiting_claim` took, when the create handed it nothing (rolled back, repeated an earlier
    request, or found no claimable task): it waits on, for the next create."""
    if waiting.handed is None and not waiting.job.done():
        app.waiting.park(waiting)


async def claim(
    app: AppContext,
    agent_id: str,
    body: ClaimRequest,
    claimer: str,
    *,
    recheck: Recheck,
    gone: Gone,
    checked: bool,
    watch: ClaimWatch | None = None,
    max_wait: float | None = None,
) -> list[Assignment]:
    """Long-poll: answer at once with pending tasks, else wait (woken in-process) up to wait_s, at most
    `max_wait` (claim_wait_max_seconds by default). The token is checked again before every read but the
    first, which the request's own check covers (`checked`: an HTTP claim); a channel's claim (its token
    was checked when it opened) checks before the first read too. With a `watch` whose last read found
    the queue empty, a claim reads only when woken: an idle agent's claim that reads nothing checks nothing."""
    settings = app.settings
    loop = asyncio.get_running_loop()
    cap = settings.claim_wait_max_seconds if max_wait is None else max_wait
    deadline = loop.time() + min(body.wait_s, cap)
    job = asyncio.current_task()
    assert job is not None, "a claim runs in a task"
    kept = app.waiting.kept(agent_id, body.capacity, loop.time(), settings.lease_seconds / 2)
    if kept:  # handed to a claim of the agent's that was canceled before it answered (WaitingClaims.keep)
        if not checked:
            own(recheck(), agent_id)
        if watch is not None:
            watch.unsure()
        return kept
    # Subscribe before the first read: a task created between the read and the wait still wakes it.
    scope = contextlib.nullcontext(watch.sub) if watch is not None else app.hub.subscribe(f"agent:{agent_id}")
    with scope as sub:
        read = watch is None or watch.must_read(loop.time())
        first = checked
        while True:
            if read:
                if not first:
                    # The token may have been revoked, or the agent deleted (and its id registered again),
                    # while this claim waited: its tasks, and their secrets, must not go to it.
                    own(recheck(), agent_id)
                with app.db.transaction() as conn:
                    got = hand_out(app, conn, agent_id, body.capacity, claimer, app.seen.due(agent_id))
                if watch is not None:
                    watch.read(loop.time(), more=len(got) >= body.capacity)
                if got:
                    return got
            first = False
            remaining = deadline - loop.time()
            if remaining <= 0 or app.hub.closing:
                return []
            # Re-read now and then: a wake-up from another replica may have been lost.
            recheck_s = app.hub.recheck_after(settings.recheck_seconds, settings.idle_recheck_seconds)
            waiting = WaitingClaim(agent_id, body.capacity, claimer, recheck, job)
            app.waiting.park(waiting)
            wakes = sub.wakes
            try:
                woke = await sub.wait(min(remaining, recheck_s))
            except asyncio.CancelledError:
                if waiting.handed:  # handed at a create's commit, canceled before it could answer
                    app.waiting.keep(agent_id, waiting.handed, loop.time(), settings.lease_seconds / 2)
                raise
            finally:
                app.waiting.leave(waiting)
            if waiting.handed:  # a create on this replica claimed them for this claim (hand_to)
                if watch is not None:
                    if sub.wakes == wakes + 1 and [t.id for t in waiting.handed] == [waiting.inserted]:
                        # Woken by that create's commit alone, which handed the one task it inserted: the queue,
                        # empty when this claim began to wait, is empty again. The next claim (a result's
                        # piggybacked one, on the sync round trip's path) need not read it.
                        watch.read(loop.time(), more=False)
                    else:
                        watch.unsure()  # other wake-ups came too, cleared unread: the next claim reads
                return waiting.handed
            if woke and watch is not None:
                # Read by this claim, or else (it ends first: its agent hung up, its token was revoked) by the
                # next one: the wait above cleared the wake-up, which must not be lost with this claim.
                watch.unsure()
            if await gone():
                return []
            # A claim that was not woken reads again only when a wake-up could have been missed: with a watch
            # when it says so; without one (an agent's second claim in flight) where wake-ups come from other
            # replicas or the listener is down. In one process every wake-up arrives, and the end of a wait
            # alone is no reason.
            if woke:
                read = True
            elif watch is not None:
                read = watch.must_read(loop.time())
            else:
                read = app.db.notifies or not app.hub.complete


async def heartbeat(
    app: AppContext, agent_id: str, body: Heartbeat, *, recheck: Recheck, seen: Sightings | None = None
) -> HeartbeatReply:
    """Renew leases; return cancels at once, or wait up to wait_s for one to be requested.

    The wait also covers tasks the agent has not listed yet (started since it sent this beat), so a
    cancel of a task that just started reaches the agent at once rather than at its next beat. With
    `seen`, a beat listing nothing only notes the agent as seen (written with the others' sightings by
    record_sightings_forever): no query of its own.
    """
    lease = app.settings.lease_seconds
    with app.hub.subscribe(f"cancel:{agent_id}") as sub:
        cancel: list[str] = []
        if body.running or seen is None:
            with app.db.transaction() as conn:
                cancel = svc.heartbeat(conn, agent_id, body.running, lease, body.tokens)
        else:
            seen.note(agent_id)
        waits = not cancel and body.wait_s > 0 and not app.hub.closing
        if waits and await sub.wait(min(body.wait_s, lease / 3)):
            own(recheck(), agent_id)
            with app.db.transaction() as conn:
                cancel = svc.cancels_since(conn, agent_id, body.running, body.tokens)
    return HeartbeatReply(cancel=cancel, lease_seconds=lease)


async def store_logs(app: AppContext, task_id: str, body: LogBatch, agent_id: str | None) -> dict[str, int]:
    """Store a batch of log lines; `{"next_seq": n}` (409 with the seq to resend from after a gap)."""
    lines = await cleaned_lines(app, task_id, body)
    with app.db.transaction() as conn:
        next_seq = svc.append_logs(conn, task_id, body.task_token, lines, app.settings.max_log_bytes, agent_id=agent_id)
    return {"next_seq": next_seq}


async def store_result(
    app: AppContext,
    task_id: str,
    body: TaskReport,
    agent_id: str | None,
    claim: int = 0,
    claimer: str = "",
    watch: ClaimWatch | None = None,
    recheck: Recheck | None = None,
) -> ResultReply:
    """Record the outcome (idempotent for a resend); with `claim` > 0, hand out up to that many of the
    agent's pending tasks in the same transaction (the claim a busy agent would send next). On a channel
    (`watch`) whose last read found the queue empty, with no wake-up since, there is nothing to hand out
    and nothing is read. `recheck` (a channel's token, checked when it opened) is checked again before a
    hand-out: its tasks, and their secrets, must not go to a revoked token."""
    report = await cleaned_report(app, task_id, body)
    now = asyncio.get_running_loop().time()
    reads = bool(claim and agent_id) and (watch is None or watch.must_read(now))
    if reads and recheck is not None and agent_id is not None:
        own(recheck(), agent_id)
    with app.db.transaction() as conn:
        task = svc.report_result(conn, task_id, report, app.settings.max_log_bytes, agent_id=agent_id)
        assignments = hand_out(app, conn, agent_id, claim, claimer, touch=False) if reads and agent_id else []
    if reads and watch is not None:
        watch.read(now, more=len(assignments) >= claim)
    return ResultReply(id=task_id, status=task.status, assignments=assignments)
