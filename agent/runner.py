"""One task on the agent: its context (log capture, files, cancel, deadline, process groups), live log
shipping in batches through the outbox journal, the executor call, and the result it ends with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.client import CloudClient, CloudUnavailable, Rejected
from agent.files import FileCache
from agent.orphans import record
from agent.outbox import Entry, Journal
from agent.policy import agent_policy
from executors.base import Outcome
from executors.capture import HeadTail
from executors.policy import CommandPolicy
from executors.process import MAX_KILL_GRACE_S
from executors.registry import UnknownTaskType, get_executor
from wire.masker import Masker, map_strings
from wire.output import storable
from wire.secrets import mask_text
from wire.tasks import POLICY_REFUSED, Assignment, LogLevel, LogLine, LogStream, TaskReport, TaskStatus

log = logging.getLogger("tiangong.agent")

# Room for the executor to stop its processes (SIGTERM grace, at most MAX_KILL_GRACE_S) before the
# runner gives up on it.
EXECUTOR_OVERRUN_SECONDS = MAX_KILL_GRACE_S + 15.0


class LogShipper:
    """Numbers lines (contiguous seq from 1), journals them in the outbox, ships them in batches by size or age.

    Unacknowledged lines are kept and travel with the result when the task ends first, so a short
    task costs no extra request. On a 409 gap the cloud names the next seq and we resend from there
    (read back from the journal when memory no longer has them).
    """

    def __init__(
        self,
        client: CloudClient,
        task: Assignment,
        flush_seconds: float,
        batch_lines: int,
        entry: Entry,
        journal: Journal,
    ) -> None:
        self._client, self._task = client, task
        self._flush_seconds, self.batch_lines = flush_seconds, batch_lines
        self._entry, self._journal = entry, journal
        self._pending: list[LogLine] = []
        self._next_seq = 1
        self._wake = asyncio.Event()
        self._closing = False
        self._runner = asyncio.create_task(self._run(), name=f"logs-{task.id}")

    @property
    def total(self) -> int:
        return self._next_seq - 1

    def add(self, message: str, stream: LogStream, level: LogLevel | None) -> None:
        line = LogLine(seq=self._next_seq, stream=stream, level=level, message=message)
        self._journal.line(line)  # on disk (the kernel's) before anyone may see it
        self._pending.append(line)
        self._next_seq += 1
        self._wake.set()

    def acknowledge(self, next_seq: int) -> bool:
        """The cloud holds every line below `next_seq`; False when it wants lines we no longer have."""
        lines = self.lines_from(next_seq)
        if lines is None:
            return False
        self._pending = lines
        return True

    def lines_from(self, seq: int) -> list[LogLine] | None:
        """This attempt's lines from `seq` on, from memory or else from the journal; None if lost."""
        first = self._pending[0].seq if self._pending else self._next_seq
        if seq >= first:
            return [ln for ln in self._pending if ln.seq >= seq]
        try:
            lines = self._entry.read().lines
        except OSError:
            return None
        return lines[seq - 1 :] if len(lines) >= self.total and seq >= 1 else None

    def unsent(self) -> list[LogLine]:
        return list(self._pending)

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if len(self._pending) < self.batch_lines:
                # Let lines gather (or the task end, so they ride with the result).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._until_full(), self._flush_seconds)
            if self._closing:
                return
            await self._ship()

    async def _until_full(self) -> None:
        while len(self._pending) < self.batch_lines and not self._closing:
            await self._wake.wait()
            self._wake.clear()

    async def _ship(self) -> None:
        while self._pending and not self._closing:
            batch = self._pending[: self.batch_lines]
            try:
                self.acknowledge(await self._client.post_logs(self._task.id, self._task.task_token, batch))
            except Rejected as exc:
                if exc.next_seq is None:
                    log.warning("%s: log batch refused: %s", self._task.id, exc.message)
                    self._closing = True  # stale attempt: stop shipping, the report will say so
                    return
                if not self.acknowledge(exc.next_seq):
                    log.error("%s: cloud wants log lines from seq %s, which are gone", self._task.id, exc.next_seq)
                    self._closing = True
                    return
            except CloudUnavailable:
                await asyncio.sleep(min(1.0, self._flush_seconds * 10))  # keep lines; try again later

    async def close(self) -> None:
        """Stop shipping; an in-flight batch completes first. Unsent lines stay for the report."""
        self._closing = True
        self._wake.set()
        await self._runner

    def abort(self) -> None:
        """Stop at once (the attempt was abandoned; its journal tells a restarted agent the rest)."""
        self._closing = True
        self._runner.cancel()


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

    def __post_init__(self) -> None:
        self._cap = HeadTail(self.max_output_bytes)

    def clean(self, text: str) -> str:
        """`text` as it may leave the agent: the task's secrets masked, NUL characters replaced."""
        return storable(self.masker.text(text))

    def log(self, message: str, stream: LogStream = LogStream.stdout, level: LogLevel | None = None) -> None:
        # Masked before it is cut or journaled: a cut through a secret would leave part of it unmasked.
        message = self.clean(message)
        # Counted with its newline, so the cap bounds the output as the command wrote it.
        if self._cap.add(message + "\n", (stream, level)) is not None:
            self.shipper.add(message, stream, level)

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

    def cancel(self, reason: str) -> None:
        if not self.cancel_event.is_set():
            self.cancel_reason = reason
            self.cancel_event.set()


async def execute(task: Assignment, ctx: TaskContext) -> Outcome:
    """Run the executor within its deadline; any exception becomes a failed outcome, never a crash."""
    ctx.masker = Masker.for_task(task.params, task.env, task.command)
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
        return await asyncio.wait_for(executor.run(task, ctx), limit)
    except TimeoutError:
        return Outcome(status=TaskStatus.timeout, error=f"execution timed out after {task.exec_timeout} s")
    except Exception as exc:  # an executor bug must fail the task, not the agent
        log.exception("%s: executor %s raised", task.id, task.type)
        return Outcome(status=TaskStatus.failed, error=mask_text(f"{type(exc).__name__}: {exc}"))


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
    ctx.journal.close()
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
