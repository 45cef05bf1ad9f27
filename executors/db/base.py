"""What every database type shares: checking params, resolving targets, running them, one Outcome.

A type implements `run_target` (one server) and, for JSON operation types, `check_command`. Results per
target are joined: `data` is the list of per-statement (or per-operation) entries for one target, or a
list of `{target, status, error, results}` when `params.targets` names several.
"""

from __future__ import annotations

import asyncio
import importlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from executors.base import BaseExecutor, Outcome, ParamsModel, RunContext
from executors.db.params import (
    DEFAULTS,
    DbParams,
    Target,
    TargetError,
    parse_params,
    resolve_targets,
    scrub,
    scrub_value,
)
from wire.tasks import Assignment, LogLevel, LogStream, TaskRequest, TaskStatus

EXEC_TIMEOUT_SLACK_SECONDS = 30
"""The task's own limit is the targets' limits plus this, so the per-target limit fires first."""


@dataclass
class TargetResult:
    """How one target went: its entries (for `data`) and its block of the result text."""

    target: Target
    status: TaskStatus = TaskStatus.success
    error: str = ""
    entries: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""


@dataclass
class TargetRun:
    """What a type's `run_target` gets besides the target: the options, the log, cancel and deadline."""

    task: Assignment
    params: DbParams
    ctx: RunContext
    deadline: float
    prefix: str
    """Put before each log line when several targets run, so their lines can be told apart."""
    secrets: list[str] = field(default_factory=list)
    """Passwords and api keys of the task's targets: servers echo them in errors, so every log line is
    scrubbed of them here, where all lines pass."""

    @property
    def cancel_event(self) -> asyncio.Event:
        """The task's: a TargetRun is what `until_stopped` watches for one target."""
        return self.ctx.cancel_event

    @property
    def options(self) -> Any:
        return self.params.exec_options

    def log(self, message: str, level: LogLevel | None = None) -> None:
        self.ctx.log(scrub(self.prefix + message, self.secrets), LogStream.stdout, level)


class DbExecutor(BaseExecutor, ABC):
    """Base of the database executors."""

    params_model: ClassVar[ParamsModel] = DbParams

    def check(self, req: TaskRequest, params: DbParams) -> None:
        """Statements (or operations) come in `command` or in a file; `command` is checked without I/O."""
        if not req.command.strip() and not req.file_id:
            raise ValueError("command: command is empty (give the statements, or a file_id)")
        if req.command.strip() and not req.file_id:
            self.check_command(req.command, params)

    def check_command(self, command: str, params: DbParams) -> None:
        """Check the command without I/O; ValueError names the problem. SQL types accept any text."""
        return None

    def exec_timeout_for(self, req: TaskRequest) -> int:
        """Default execution limit: one per-target limit per wave of `concurrency` targets, plus slack."""
        try:
            params = parse_params(req.params, self.type)
        except ValueError:
            return DEFAULTS[self.type].timeout_ms // 1000
        per_target = (params.exec_options.timeout_ms or DEFAULTS[self.type].timeout_ms) / 1000
        waves = math.ceil(len(params.targets or [None]) / params.exec_options.concurrency)
        return math.ceil(per_target * waves) + EXEC_TIMEOUT_SLACK_SECONDS

    def driver_modules(self, targets: list[Target]) -> list[str]:
        """Modules `run_target` imports on first use (drivers, dialects), loaded before any deadline starts."""
        return []

    @abstractmethod
    async def run_target(self, target: Target, run: TargetRun) -> TargetResult:
        """Work on one target; failures go into the TargetResult, not raised."""

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        try:
            params = parse_params(task.params, self.type)
            targets = resolve_targets(self.type, params, ctx.connections)
        except (ValueError, TargetError) as exc:
            return Outcome(TaskStatus.failed, error=str(exc))
        secrets = [s for t in targets for s in t.secrets]
        # A cold agent's first import of a driver can take longer than a short timeout_ms (over a second
        # for pymysql and SQLAlchemy on a slow machine). That time is the agent's, not the statement's:
        # spend it before any target's deadline starts, so timeout_ms bounds the work on the server.
        try:
            await asyncio.to_thread(_import_all, self.driver_modules(targets))
        except ImportError as exc:
            return Outcome(TaskStatus.failed, error=f"the {self.type} driver is not installed on this agent: {exc}")
        limit_s = (params.exec_options.timeout_ms or DEFAULTS[self.type].timeout_ms) / 1000
        gate = asyncio.Semaphore(params.exec_options.concurrency)
        several = params.targets is not None and len(targets) > 1

        async def one(target: Target) -> TargetResult:
            async with gate:
                loop = asyncio.get_running_loop()
                deadline = min(ctx.deadline, loop.time() + limit_s)
                run = TargetRun(task, params, ctx, deadline, f"[{target.label}] " if several else "", secrets)
                if several:
                    run.log("start")
                try:
                    res = await self.run_target(target, run)
                except Exception as exc:  # a driver surprise fails this target, not its siblings
                    res = TargetResult(target, TaskStatus.failed, f"{type(exc).__name__}: {exc}")
                res.error = scrub(res.error, secrets)
                res.text = scrub(res.text, secrets)
                res.entries = [scrub_value(e, secrets) for e in res.entries]
                if several:
                    run.log(f"{res.status.value}" + (f": {res.error}" if res.error else ""))
                return res

        results = await asyncio.gather(*(one(t) for t in targets))
        return _outcome(results, params, several)


def _import_all(names: list[str]) -> None:
    for name in names:
        importlib.import_module(name)


_WORST = [TaskStatus.canceled, TaskStatus.timeout, TaskStatus.failed, TaskStatus.success]


def _outcome(results: list[TargetResult], params: DbParams, several: bool) -> Outcome:
    status = next(s for s in _WORST if any(r.status == s for r in results))
    header = _metadata_text(params)
    if not several:
        r = results[0]
        return Outcome(status, result=header + r.text, data=r.entries, error=r.error)
    blocks = [f"=== Target: {r.target.label} ({r.status.value}) ===\n{r.text}" for r in results]
    bad = [r for r in results if r.status != TaskStatus.success]
    error = "; ".join(f"{r.target.label}: {r.error or r.status.value}" for r in bad)
    data = [
        {"target": r.target.label, "status": r.status.value, "error": r.error, "results": r.entries} for r in results
    ]
    return Outcome(status, result=header + "\n".join(blocks), data=data, error=error)


def _metadata_text(params: DbParams) -> str:
    if params.metadata is None:
        return ""
    fields = params.metadata.model_dump(exclude_none=True)
    if not fields:
        return ""
    return "".join(f"{str(k).capitalize()}: {v}\n" for k, v in fields.items()) + "\n"
