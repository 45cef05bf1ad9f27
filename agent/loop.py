"""The agent process: register, claim (bounded concurrency), heartbeat, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys

from agent.client import Backoff, CloudClient, CloudUnavailable, Rejected, retrying
from agent.config import load_config
from agent.files import FileCache
from agent.runner import LogShipper, TaskContext, execute, report
from agent.settings import AgentSettings
from executors.registry import known_types
from wire import API_VERSION
from wire.agents import AgentRegister
from wire.tasks import Assignment

log = logging.getLogger("tiangong.agent")

REPORT_GRACE_SECONDS = 90.0
"""After the drain's grace, how long canceled tasks get to stop (at most MAX_KILL_GRACE_S + overrun) and
report before the agent stops retrying an unreachable cloud."""


class AgentRefused(Exception):
    """The cloud will not accept this agent; the message says why."""


class Agent:
    """One agent process; several may serve the same agent id."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.config = load_config(settings.agent_config)
        self.client = CloudClient(settings.server, settings.agent_token.get_secret_value(), settings.agent_id)
        self.workdir = settings.data_dir.resolve() / "work"
        self.files = FileCache(self.client, settings.data_dir.resolve() / "cache" / "files")
        self.running: dict[str, TaskContext] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self.stopping = asyncio.Event()
        # Set when the drain gives up: reports still waiting for an unreachable cloud stop retrying.
        self.give_up = asyncio.Event()
        self._heartbeat_seconds = 5.0

    async def run(self) -> None:
        """Serve until stop() is called, then drain and return.

        Raises AgentRefused when the cloud rejects this agent (wrong token, bad id): retrying would not help.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            try:
                await self._register()
            except CloudUnavailable:
                return  # stopped while the cloud was still out of reach
            except Rejected as exc:
                raise AgentRefused(f"the cloud refused to register agent {self.settings.agent_id}: {exc}") from exc
            await self._serve()
        finally:
            await self.client.aclose()

    async def _serve(self) -> None:
        heart = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        claimer = asyncio.create_task(self._claim_loop(), name="claim")
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

    async def _register(self) -> None:
        reg = AgentRegister(
            agent_id=self.settings.agent_id,
            hostname=socket.gethostname(),
            labels=self.settings.labels,
            version=API_VERSION,
            executors=known_types(),
            max_concurrency=self.settings.max_concurrency,
        )
        reply = await retrying(lambda: self.client.register(reg), "register", self.stopping)
        self._heartbeat_seconds = reply.heartbeat_seconds
        log.info("registered as %s at %s (max concurrency %d)", reg.agent_id, self.settings.server, reg.max_concurrency)

    async def _claim_loop(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            free = self.settings.max_concurrency - len(self.running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                tasks = await self.client.claim(free, self.settings.claim_wait_seconds)
                backoff.reset()
            except CloudUnavailable as exc:
                delay = backoff.next_delay()
                log.warning("claim: cloud unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            except Rejected as exc:
                if exc.status == 404:  # the cloud lost our registration (e.g. a fresh database)
                    await self._register()
                    continue
                delay = backoff.next_delay()
                log.error("claim refused: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            for task in tasks:
                self._start(task)

    def _start(self, task: Assignment) -> None:
        loop = asyncio.get_running_loop()
        shipper = LogShipper(self.client, task, self.settings.log_flush_seconds, self.settings.log_batch_lines)
        ctx = TaskContext(
            task_id=task.id,
            workdir=self.workdir,
            deadline=loop.time() + task.exec_timeout,
            max_output_bytes=task.max_log_bytes,
            shipper=shipper,
            files=self.files,
            params=task.params,
            connections=self.config.connections,
            config=self.config.model_dump(exclude={"connections"}),
        )
        self.running[task.id] = ctx
        job = asyncio.create_task(self._run_task(task, ctx), name=f"task-{task.id}")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _run_task(self, task: Assignment, ctx: TaskContext) -> None:
        try:
            outcome = await execute(task, ctx)
            await report(self.client, task, ctx, outcome, stop=self.give_up)
        except CloudUnavailable as exc:
            # Only after give_up: the agent is exiting and the cloud is still away. (An on-disk outbox
            # that survives the restart is issue 7's; until then the task ends `agent lost`.)
            log.error("%s: result not delivered before exit (%s)", task.id, exc)
        finally:
            self.running.pop(task.id, None)
            self._slot_freed.set()

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                reply = await self.client.heartbeat(list(self.running), wait_s=self._heartbeat_seconds)
                for task_id in reply.cancel:
                    if ctx := self.running.get(task_id):
                        ctx.cancel("canceled by request")
            except (CloudUnavailable, Rejected) as exc:
                log.warning("heartbeat failed: %s", exc)
            # The cloud holds a heartbeat open while tasks run; without tasks it answers at once.
            await asyncio.sleep(max(0.0, self._heartbeat_seconds - (loop.time() - started)))

    async def _drain(self) -> None:
        """Let running tasks finish within the grace period (still heartbeating), then cancel the rest."""
        if self._jobs:
            log.info("draining %d running task(s), grace %.0fs", len(self._jobs), self.settings.shutdown_grace_seconds)
            _, pending = await asyncio.wait(set(self._jobs), timeout=self.settings.shutdown_grace_seconds)
            if pending:
                for ctx in self.running.values():
                    ctx.cancel("agent shutting down: canceled after the grace period")
                _, pending = await asyncio.wait(pending, timeout=REPORT_GRACE_SECONDS)
            if pending:
                self.give_up.set()
                await asyncio.wait(pending)


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
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    except AgentRefused as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
