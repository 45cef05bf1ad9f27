"""The agent process: claim into bounded slots, heartbeat, and drain on SIGTERM/SIGINT. Each attempt runs
in agent/runner.py, results ship through agent/shipping.py, agent/recovery.py undoes a crash at start and
agent/registration.py signs in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys

from agent.client import Backoff, CloudClient, CloudUnavailable, Rejected
from agent.config import load_config
from agent.files import FileCache
from agent.health import Health
from agent.identity import Identity
from agent.ledger import StartedLedger
from agent.outbox import DataDirInUse, Outbox
from agent.policy import served_types
from agent.recovery import recover
from agent.registration import register
from agent.runner import EXECUTOR_OVERRUN_SECONDS, Attempt, Shared
from agent.settings import AgentSettings
from agent.shipping import Deliveries
from executors.registry import known_types
from wire import API_VERSION
from wire.agents import AgentRegister
from wire.tasks import Assignment

log = logging.getLogger("tiangong.agent")

STOP_GRACE_SECONDS = EXECUTOR_OVERRUN_SECONDS + 15.0
"""After the drain's grace, how long canceled tasks get to stop (their executors stop processes within
MAX_KILL_GRACE_S). A task still running then is abandoned as in a crash: the next start reports it."""
DELIVERY_GRACE_SECONDS = 5.0
"""At shutdown, results get the rest of the grace period, and at least this long, to reach the cloud;
what is not delivered by then stays in the outbox and the next start delivers it."""
MAX_BEAT_WAIT_SECONDS = 60.0
"""The longest wait a heartbeat may ask the cloud to hold it (wire.agents.Heartbeat.wait_s)."""
START_BEAT_SECONDS = 0.5
"""An idle agent on a channel beats this long after a task starts, if it still runs: how late, at worst, a
cancel requested just after the start reaches it."""
LEND_SECONDS = 1.0
"""How long a finished attempt's slot waits for its result to be sent with a piggybacked claim before the
claim loop may use it (a result sent later, after log batches or while the cloud is away, claims nothing)."""
SHUTDOWN_OVERRUN_SECONDS = STOP_GRACE_SECONDS + 2 * DELIVERY_GRACE_SECONDS
"""The most a stopping agent takes beyond its grace period (a process manager's stop timeout must exceed
grace + this): canceled tasks stopping, abandoned ones settling, results in flight."""


class AgentRefused(Exception):
    """The agent cannot serve (the cloud refuses it, or its data dir is in use); the message says why."""


class Agent:
    """One agent process; several may serve the same agent id."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.config = load_config(settings.agent_config)
        data_dir = settings.data_dir.resolve()
        configured = settings.agent_token.get_secret_value()
        self.identity = Identity(data_dir, settings.server, settings.agent_id, configured)
        token = self.identity.first_token()
        self.client = CloudClient(settings.server, token, settings.agent_id, settings.agent_channel)
        self.client.piggyback = self
        self.workdir = data_dir / "work"
        self.outbox = Outbox(data_dir / "outbox")
        try:
            self.outbox.lock()
        except DataDirInUse as exc:
            raise AgentRefused(str(exc)) from None
        self.ledger = StartedLedger(self.outbox.root / "started")
        self.health = Health(data_dir)
        self.shared = Shared(
            client=self.client,
            outbox=self.outbox,
            files=FileCache(self.client, data_dir / "cache" / "files"),
            workdir=self.workdir,
            config=self.config,
            log_flush_seconds=settings.log_flush_seconds,
            log_batch_lines=settings.log_batch_lines,
        )
        self.running: dict[str, Attempt] = {}
        """Task id -> its attempt, from its start until its result is stored (or, abandoned, until exit)."""
        self._jobs: set[asyncio.Task[None]] = set()
        self._reserved = 0
        """Slots promised to claims in flight (the claim loop's, or a result's piggybacked one)."""
        self._lent: dict[str, asyncio.TimerHandle] = {}
        """Task id -> the slot its finished attempt holds for its result's piggybacked claim (briefly)."""
        self.deliveries = Deliveries(self.client, settings.log_batch_lines)
        self._slot_freed = asyncio.Event()
        self._started = asyncio.Event()
        """Set when an attempt starts: wakes an idle heartbeat loop that is not beating."""
        self.stopping = asyncio.Event()
        self._heartbeat_seconds = 5.0
        self._lease_seconds = 30.0
        self._claims_show_online = False
        """The cloud counts a claim in flight as a sighting (RegisterReply.claims_show_online)."""

    async def run(self) -> None:
        """Deliver what a previous process left, serve until stop() is called, then drain and return.

        Raises AgentRefused when the cloud rejects this agent (wrong token, bad id): retrying would not help.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.health.start()
        try:
            for item in recover(self.outbox, self.ledger):
                self.deliveries.send(item)
            try:
                await self._register()
            except CloudUnavailable:
                return  # stopped while the cloud was still out of reach
            except Rejected as exc:
                raise AgentRefused(f"the cloud refused to register agent {self.settings.agent_id}: {exc}") from exc
            if not self.stopping.is_set():
                self.health.ready()
            await self._serve()
        finally:
            self.health.not_ready()
            await self.deliveries.settle(0.0)
            self.ledger.close()
            self.outbox.unlock()
            await self.client.aclose()

    async def _serve(self) -> None:
        # The claim loop first: its claim is in flight (reserved) before the first beat's turn, so an idle agent
        # whose claims show it online does not beat once at every start.
        claimer = asyncio.create_task(self._claim_loop(), name="claim")
        heart = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        await self.stopping.wait()
        # Abandon the long-poll in flight. The cloud checks that a claim's caller is still there before
        # handing it tasks, except in the first second of its wait (see the claim route).
        claimer.cancel()
        try:
            await claimer
        except asyncio.CancelledError:
            pass
        except Exception:  # the claim loop died on its own: still drain what runs
            log.exception("claim loop failed")
        await self._drain()
        heart.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heart

    def stop(self) -> None:
        self.stopping.set()
        self.health.not_ready()  # draining: no new work from here on

    async def _register(self) -> None:
        reg = AgentRegister(
            agent_id=self.settings.agent_id,
            hostname=socket.gethostname(),
            labels=self.settings.labels,
            version=API_VERSION,
            executors=served_types(self.config, known_types()),
            max_concurrency=self.settings.max_concurrency,
        )
        reply = await register(self.client, self.identity, reg, self.stopping, self.health.alive)
        self._heartbeat_seconds = reply.heartbeat_seconds
        self._lease_seconds = reply.lease_seconds
        self._claims_show_online = reply.claims_show_online
        log.info("registered as %s at %s (max concurrency %d)", reg.agent_id, self.settings.server, reg.max_concurrency)

    def _free_slots(self) -> int:
        """Slots neither running a task, nor promised to a claim in flight, nor lent to a result."""
        return self.settings.max_concurrency - len(self.running) - self._reserved - len(self._lent)

    async def _claim_loop(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            free = self._free_slots()
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._reserved += free  # a result's piggybacked claim must not count these slots again
            try:
                tasks = await self.client.claim(free, self.settings.claim_wait_seconds)
            except CloudUnavailable as exc:
                delay = backoff.next_delay()
                log.warning("claim: cloud unavailable (%s); retrying in %.1fs", exc, delay)
            except Rejected as exc:
                if exc.status == 404:  # the cloud lost our registration (e.g. a fresh database)
                    delay = -1.0
                else:
                    delay = backoff.next_delay()
                    log.error("claim refused: %s; retrying in %.1fs", exc, delay)
            else:
                backoff.reset()
                self._start_all(tasks, free)
                continue
            finally:
                self._reserved -= free
            if delay < 0:
                await self._register()
            else:
                await asyncio.sleep(delay)

    def offer(self, task_id: str) -> int:
        """A result about to be sent: the slot its attempt lent it, plus any other free one, go with it as a
        claim (none when it lent none, or while stopping)."""
        lent = self._lent.pop(task_id, None)
        if lent is None:
            return 0
        lent.cancel()
        free = self._free_slots()
        if self.stopping.is_set() or free <= 0:
            self._slot_freed.set()
            return 0
        self._reserved += free
        return free

    def took(self, offered: int, tasks: list[Assignment]) -> None:
        """The result's answer came (or failed): start what it brought, free the rest of the offer."""
        self._reserved -= offered
        self._start_all(tasks, offered)
        self._slot_freed.set()

    def _start_all(self, tasks: list[Assignment], slots: int) -> None:
        """Start what a claim brought, never more than the slots it was given."""
        if len(tasks) > slots:
            # A cloud that breaks its contract: the extra tasks are left to their lease (retried or failed
            # `agent lost`), never run beyond max_concurrency.
            extra = [t.id for t in tasks[slots:]]
            log.error("the cloud handed out %d task(s) for %d free slot(s); not running %s", len(tasks), slots, extra)
        for task in tasks[:slots]:
            self._start(task)

    def _lend(self, attempt: Attempt) -> None:
        """The attempt ended and its result ships next: its slot waits for that result's piggybacked claim,
        and returns to the claim loop if the result is not sent within LEND_SECONDS."""
        task_id = attempt.task.id
        if self.running.get(task_id) is attempt:
            del self.running[task_id]
        old = self._lent.pop(task_id, None)
        if old is not None:
            old.cancel()
        if self.stopping.is_set():
            self._slot_freed.set()
            return
        loop = asyncio.get_running_loop()
        self._lent[task_id] = loop.call_later(LEND_SECONDS, self._unlend, task_id)

    def _unlend(self, task_id: str) -> None:
        if self._lent.pop(task_id, None) is not None:
            self._slot_freed.set()

    def _start(self, task: Assignment) -> None:
        if self.ledger.started(task.id, task.attempt):
            log.warning("%s: attempt %d was started here before; it is never run twice", task.id, task.attempt)
            return
        try:
            self.ledger.add(task.id, task.attempt)
        except OSError as exc:  # remembered in memory all the same
            log.error("%s: cannot record the start on disk: %s", task.id, exc)
        attempt = Attempt(task, self.shared)
        self.running[task.id] = attempt
        self._started.set()
        job = asyncio.create_task(self._run(attempt), name=f"task-{task.id}")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _run(self, attempt: Attempt) -> None:
        try:
            item = await attempt.run()
        except asyncio.CancelledError:
            # Abandoned at shutdown: it stays in `running`, so heartbeats keep its lease until this
            # process exits, and the next start reports it.
            raise
        except Exception:
            self._free(attempt)
            raise
        self._lend(attempt)
        self.deliveries.send(item)

    def _free(self, attempt: Attempt) -> None:
        """Give the attempt's slot back (its result, if any, is in the outbox by now)."""
        if self.running.get(attempt.task.id) is attempt:
            del self.running[attempt.task.id]
        self._slot_freed.set()

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self._started.clear()  # before `listed` is taken: a start after it wakes the idle wait below
            # Each pass, answered or not. Here rather than in the claim loop, which may wait hours for a
            # free slot: this loop passes every few seconds, and an agent whose heartbeats stopped is dead.
            self.health.alive()
            # Results still on their way count as running: the cloud must not reap them meanwhile.
            listed = self.deliveries.tokens() | {tid: a.task.task_token for tid, a in self.running.items()}
            # An idle agent beats half as often (no lease to renew; its cloud wakes the beat for any cancel),
            # still within a third of the lease, so a task it starts meanwhile is renewed in time, and
            # within the longest wait a beat may ask for.
            idle = min(2 * self._heartbeat_seconds, self._lease_seconds / 3, MAX_BEAT_WAIT_SECONDS)
            every = self._heartbeat_seconds if listed else max(self._heartbeat_seconds, idle)
            if not listed and (self.client.channel_open or (self._claims_show_online and self._reserved > 0)):
                # Idle on an open channel, or with an HTTP claim in flight: the cloud sees the agent through it
                # (it closes a channel whose pings go unanswered, and ends a claim whose agent hung up), and
                # there is no lease to renew. A task starting wakes this loop, which beats
                # for it (holding the beat open for a cancel) if it still runs START_BEAT_SECONDS later: a
                # task of a few milliseconds costs no beat at all.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every):
                        await self._started.wait()
                        await asyncio.sleep(START_BEAT_SECONDS)
                continue
            try:
                reply = await self.client.heartbeat(listed, wait_s=every)
                again = False
                for task_id in reply.cancel:
                    attempt = self.running.get(task_id)
                    if task_id in listed and attempt is not None and attempt.task.task_token != listed[task_id]:
                        # The answer is about the attempt this beat listed, which has ended since, and a
                        # newer attempt of the task runs here now: ask again about that one.
                        again = True
                    elif attempt is not None:
                        attempt.cancel("canceled by request")
                if again or any(task_id not in listed for task_id in reply.cancel):
                    # A task that started after this beat was sent: beat again at once, listing it.
                    continue
            except (CloudUnavailable, Rejected) as exc:
                log.warning("heartbeat failed: %s", exc)
            # The cloud holds a heartbeat open until a cancel is requested or wait_s passes.
            await asyncio.sleep(max(0.0, every - (loop.time() - started)))

    async def _drain(self) -> None:
        """Let running tasks finish within the grace period (still heartbeating), cancel the rest, then
        give their results the rest of the grace (at least DELIVERY_GRACE_SECONDS) to reach the cloud."""
        loop = asyncio.get_running_loop()
        grace = self.settings.shutdown_grace_seconds
        end = loop.time() + grace
        if self._jobs:
            log.info("draining %d running task(s), grace %.0fs", len(self._jobs), grace)
            _, pending = await asyncio.wait(set(self._jobs), timeout=grace)
            if pending:
                for attempt in list(self.running.values()):
                    attempt.cancel("agent shutting down: canceled after the grace period")
                _, pending = await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
            if pending:
                log.error("%d task(s) did not stop when canceled; abandoned for the next start to report", len(pending))
                for job in pending:
                    job.cancel()
                await asyncio.wait(pending, timeout=DELIVERY_GRACE_SECONDS)
        await self.deliveries.settle(max(end - loop.time(), DELIVERY_GRACE_SECONDS))


def install_child_watcher() -> None:
    """Python 3.11 reaps children with a thread per process by default; pidfd is ~2x faster.
    3.12+ picks pidfd itself (and deprecates this call)."""
    if sys.version_info < (3, 12) and hasattr(asyncio, "PidfdChildWatcher"):
        with contextlib.suppress(OSError):
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.get_event_loop_policy().set_child_watcher(watcher)


async def serve(settings: AgentSettings) -> None:
    """Run an agent until SIGTERM or SIGINT."""
    install_child_watcher()
    try:
        agent = Agent(settings)
    except AgentRefused as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    except AgentRefused as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
