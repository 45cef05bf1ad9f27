"""One attempt of a task on the agent: its outbox entry and live log, its context (output capture,
files, cancel, deadline, process groups), the executor call, and the result it stores in the outbox."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.client import CloudClient
from agent.config import AgentConfig
from agent.files import FileCache
from agent.orphans import record
from agent.outbox import Journal, Outbox
from agent.policy import agent_policy
from agent.shipping import LogShipper, Pending
from executors.base import Outcome
from executors.capture import HeadTail
from executors.policy import CommandPolicy
from executors.procs import MAX_KILL_GRACE_S
from executors.registry import UnknownTaskType, get_executor
from wire.logs import TASK_ID
from wire.masker import Masker, map_strings
from wire.output import storable
from wire.secrets import mask_text
from wire.tasks import POLICY_REFUSED, Assignment, LogLevel, LogStream, TaskReport, TaskStatus

log = logging.getLogger("tiangong.agent")

# Room for the executor to stop its processes (SIGTERM grace, at most MAX_KILL_GRACE_S) before the
# runner gives up on it.
EXECUTOR_OVERRUN_SECONDS = MAX_KILL_GRACE_S + 15.0


@dataclass
class TaskContext:
    """The RunContext the agent gives executors."""

    task_id: str
    workdir: Path
    deadline: float
    max_output_bytes: int
    shipper: LogShipper
    journal: Journal
    files: FileCache
    params: Mapping[str, Any] = field(default_factory=dict)
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str = ""
    masker: Masker = field(default_factory=Masker)
    """Masks the task's secrets in everything that leaves the agent (set by `execute`)."""
    policy: CommandPolicy | None = None
    """The agent's command policy; None means the one `config["policy"]` describes (the config file's)."""
    cloud: CloudClient | None = None
    """The agent's client of the cloud, for `cloud_route` (None: this context has no cloud)."""

    def __post_init__(self) -> None:
        self._cap = HeadTail(self.max_output_bytes)

    def clean(self, text: str) -> str:
        """`text` as it may leave the agent: the task's secrets masked, NUL characters replaced."""
        return storable(self.masker.text(text))

    def log(self, message: str, stream: LogStream = LogStream.stdout, level: LogLevel | None = None) -> None:
        self.log_lines([message], stream, level)

    def log_lines(
        self, messages: list[str], stream: LogStream = LogStream.stdout, level: LogLevel | None = None
    ) -> None:
        """Several lines of one stream, masked together (a pass per secret over all of them)."""
        # Masked before they are cut or journaled: a cut through a secret would leave part of it unmasked.
        cleaned = self.masker.lines(messages)
        if "\x00" in "".join(cleaned):
            cleaned = [storable(m) for m in cleaned]
        # Each counted with its newline, so the cap bounds the output as the command wrote it.
        add, tag = self._cap.add, (stream, level)
        self.shipper.add_many([m for m in cleaned if add(m + "\n", tag) is not None], stream, level)

    def finish_log(self) -> None:
        """Flush the held tail of the log, after a marker line when output was dropped."""
        for line, tag in self._cap.finish_tagged():
            stream, level = tag if tag is not None else (LogStream.system, LogLevel.warn)
            self.shipper.add(line.removesuffix("\n"), stream, level)

    async def fetch_file(self, file_id: str) -> Path:
        """The file from the agent's private cache, checked against its MD5 now (agent/files.py)."""
        return await self.files.get(file_id, self.params.get("file_path"))

    def process_started(self, pid: int) -> None:
        """Journal the process group so that an agent restarted after a crash can kill it."""
        self.journal.process(record(pid))

    def cloud_route(self, path: str) -> tuple[str, dict[str, str]]:
        """`path` on the agent's cloud and the agent token's Authorization header."""
        if self.cloud is None:
            raise RuntimeError("this agent context has no cloud to talk to")
        return self.cloud.route(path)

    def cancel(self, reason: str) -> None:
        if not self.cancel_event.is_set():
            self.cancel_reason = reason
            self.cancel_event.set()


async def execute(task: Assignment, ctx: TaskContext) -> Outcome:
    """Run the executor within its deadline; any exception becomes a failed outcome, never a crash."""
    ctx.masker = Masker.for_task_later(task.params, task.env, task.command)
    if _small(task):
        refused = _refusal(task, ctx)  # microseconds: a thread's hand-off would cost more than the check
    else:
        refused = await asyncio.to_thread(_refusal, task, ctx)  # a megabyte command takes a moment to check
    if refused:
        ctx.log(refused, LogStream.system, LogLevel.error)
        return Outcome(status=TaskStatus.failed, error=refused)
    try:
        executor = get_executor(task.type)
    except UnknownTaskType as exc:
        return Outcome(status=TaskStatus.failed, error=str(exc))
    loop = asyncio.get_running_loop()
    limit = max(0.0, ctx.deadline - loop.time()) + EXECUTOR_OVERRUN_SECONDS
    try:
        # A timeout scope, not wait_for: that would run the executor in an asyncio task of its own.
        async with asyncio.timeout(limit):
            return await executor.run(task, ctx)
    except TimeoutError:
        return Outcome(status=TaskStatus.timeout, error=f"execution timed out after {task.exec_timeout} s")
    except Exception as exc:  # an executor bug must fail the task, not the agent
        log.exception("%s: executor %s raised", task.id, task.type)
        return Outcome(status=TaskStatus.failed, error=mask_text(f"{type(exc).__name__}: {exc}"))


INLINE_CHECK_CHARS = 8192
"""A task whose command and flat string params are at most this long is checked on the loop."""


def _small(task: Assignment) -> bool:
    """Whether the policy may check `task` on the loop: short text only (nested params go to a thread)."""
    size = len(task.command or "")
    for value in task.params.values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            size += sum(len(item) for item in value)
        elif value is not None and not isinstance(value, bool | int | float):
            return False
        if size > INLINE_CHECK_CHARS:
            return False
    return True


def _refusal(task: Assignment, ctx: TaskContext) -> str:
    """Why the agent's policy refuses the task ("" when it may run); a policy that fails refuses."""
    try:
        policy = ctx.policy if ctx.policy is not None else agent_policy(ctx.config)
        refusal = policy.check(task.type, task.command, task.params)
    except Exception as exc:
        log.exception("%s: the command policy failed", task.id)
        return f"{POLICY_REFUSED}: the check failed ({type(exc).__name__})"
    return "" if refusal is None else f"{POLICY_REFUSED}: {refusal.message}"


async def finish(task: Assignment, ctx: TaskContext, outcome: Outcome) -> TaskReport:
    """Close the attempt's log (numbering the held tail) and make its result, lines not included. The
    result, error and data leave with the task's secrets masked, whatever the executor did."""
    await ctx.shipper.close()
    ctx.finish_log()
    error = outcome.error
    if outcome.status == TaskStatus.canceled and ctx.cancel_reason:
        error = ctx.cancel_reason
    return TaskReport(
        task_token=task.task_token,
        status=outcome.status,
        exit_code=outcome.exit_code,
        result=ctx.clean(outcome.result),
        data=map_strings(outcome.data, ctx.clean),
        error=ctx.clean(error),
        log_lines=ctx.shipper.total,
    )


@dataclass(frozen=True)
class Shared:
    """What every attempt of one agent process uses."""

    client: CloudClient
    outbox: Outbox
    files: FileCache
    workdir: Path
    config: AgentConfig
    log_flush_seconds: float
    log_batch_lines: int

    # Made once per agent process, not per task (the config file is read at start only).
    @functools.cached_property
    def config_view(self) -> dict[str, Any]:
        """The config without its connections: what each task's context shows executors."""
        return self.config.model_dump(exclude={"connections"})

    @functools.cached_property
    def policy(self) -> CommandPolicy:
        """The config's command policy (checked when the config was loaded)."""
        return agent_policy(self.config)


class Attempt:
    """One attempt from its start to its result in the outbox; the loop holds one per running task."""

    def __init__(self, task: Assignment, shared: Shared) -> None:
        self.task = task
        self.entry, journal = shared.outbox.create(task)
        shipper = LogShipper(shared.client, task, shared.log_flush_seconds, shared.log_batch_lines, self.entry, journal)
        self.ctx = TaskContext(
            task_id=task.id,
            workdir=shared.workdir,
            deadline=asyncio.get_running_loop().time() + task.exec_timeout,  # the deadline starts now
            max_output_bytes=task.max_log_bytes,
            shipper=shipper,
            journal=journal,
            files=shared.files,
            params=task.params,
            connections=shared.config.connections,
            config=shared.config_view,
            policy=shared.policy,
            cloud=shared.client,
        )

    def cancel(self, reason: str) -> None:
        """Ask the executor to stop; the result says `reason`."""
        self.ctx.cancel(reason)

    async def run(self) -> Pending:
        """Run to the end and store the result in the outbox before its first send; returns it to ship.

        Cancelled (abandoned at shutdown), the attempt stops shipping its log and stores no result: its
        journal lets the next start report it.
        """
        task, ctx = self.task, self.ctx
        # This attempt's own asyncio task: the id marks its log records and those of what it starts (the
        # result's delivery), and never leaks to the claim loop.
        TASK_ID.set(task.id)
        started = time.monotonic()
        # The end's line says all this at INFO: one line per task, not two, on an agent running hundreds a second.
        log.debug("started %s (%s, attempt %d)", task.id, task.type, task.attempt)
        try:
            outcome = await execute(task, ctx)
            report = await finish(task, ctx, outcome)
        except asyncio.CancelledError:
            ctx.shipper.abort()
            ctx.journal.close()
            raise
        took = time.monotonic() - started
        log.info("%s (%s, attempt %d) ended %s in %.3f s", task.id, task.type, task.attempt, report.status, took)
        if not ctx.journal.finish(report):  # the journal said why
            log.error("%s: cannot store the result in the outbox; sending it from memory", task.id)
        return Pending(self.entry, report, ctx.shipper.unsent(), ctx.shipper.lines_from)
