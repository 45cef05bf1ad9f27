"""What the JSON-operation types (`mongo`, `elasticsearch`) share: reading the operations, and the loop
that runs them in order until the first failure, cancel or deadline, with one entry, one progress line
and one result block per operation. Operations are not transactional: the result says what stays applied.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from executors.base import Stopped, stop_reason
from executors.db import blocking
from executors.db.base import TargetResult, TargetRun
from executors.db.params import Target
from executors.db.source import read_source
from wire.tasks import LogLevel, TaskStatus

DRIVER_TIMEOUT_SLACK_SECONDS = 1.0
"""The driver's own timeout ends this much after the deadline: `blocking.call` reports the timeout at the
deadline, and the driver's timeout then ends the call it stopped waiting for."""


def parse_operations(
    text: str, root: str, check: Callable[[Any, str], None], loads: Callable[[str], Any] = json.loads
) -> list[Any]:
    """The operations of `text` (one object or a list), each passed to `check(op, where)`; ValueError names
    the field, e.g. `command[1].filter: ...`."""
    try:
        value = loads(text)
    except Exception as exc:  # json and bson.json_util raise different types for bad input
        raise ValueError(f"{root}: not valid JSON: {exc}") from None
    if isinstance(value, list) and not value:
        raise ValueError(f"{root}: the list of operations is empty")
    ops = value if isinstance(value, list) else [value]
    for i, op in enumerate(ops):
        check(op, f"{root}[{i}]" if isinstance(value, list) else root)
    return ops


async def read_operations(
    target: Target, run: TargetRun, parse: Callable[[str, str], list[Any]], what: str, note: str = ""
) -> list[Any] | TargetResult:
    """The target's operations (file_id before command), parsed by `parse(text, root)` and counted in the
    log; a failed TargetResult naming the field when the host is a `what` (URI, URL) or the source is bad."""
    if "://" in target.host or "@" in target.host:
        return TargetResult(target, TaskStatus.failed, f"target.host: give a host name or address, not a {what}")
    try:
        where, text = await read_source(run.task, run.params, run.ctx, suffix=".json")
        ops = parse(text, "command" if where == "command" else where)
    except ValueError as exc:
        return TargetResult(target, TaskStatus.failed, str(exc))
    run.log(f"{len(ops)} operation{'s' * (len(ops) != 1)} from {where} on {target.label}{note}")
    return ops


def stopped(reason: str) -> TaskStatus:
    """The status of a target stopped by `canceled` or `timeout`."""
    return TaskStatus.canceled if reason == "canceled" else TaskStatus.timeout


class OperationLoop(ABC):
    """The operation loop for one target. A type says how to apply one operation (in a worker thread),
    how to word its errors, and what its entries show."""

    on: ClassVar[str]
    """The field naming what an operation works on: `collection`, `index`."""
    on_label: ClassVar[str]

    def __init__(self, ops: list[dict[str, Any]], target: Target, run: TargetRun) -> None:
        self.ops, self.target, self.run = ops, target, run
        self.entries: list[dict[str, Any]] = []

    @abstractmethod
    def apply(self, op: dict[str, Any], timeout: float, tag: str) -> tuple[dict[str, Any], str]:
        """Run one operation (worker thread), labelled `tag` on the server (a comment, an X-Opaque-Id): the
        entry's fields, and an error the server reported inside a successful answer ("" when none).
        Raising fails the operation."""

    def interrupt(self, tag: str) -> None:
        """Stop the operation labelled `tag` on the server (another thread, on cancel or timeout). Without
        it the server would go on with an operation the task stopped waiting for."""
        return None

    def tag(self, order: int) -> str:
        """The label of operation `order` (from 1): the task id finds it again in the server's task list."""
        return f"tiangong:{self.run.ctx.task_id}:{order}"

    @abstractmethod
    def message(self, exc: BaseException) -> str:
        """An error of the client as one line."""

    @abstractmethod
    def progress(self, entry: dict[str, Any]) -> str:
        """What the operation did, for its log line: `inserted 3`."""

    @abstractmethod
    def details(self, entry: dict[str, Any]) -> list[str]:
        """The result block's lines between its status and its time."""

    async def run_all(self) -> TargetResult:
        loop = asyncio.get_running_loop()
        cancel, n = self.run.ctx.cancel_event, len(self.ops)
        for i, op in enumerate(self.ops, 1):
            what = f"{op['operation']} {op[self.on]}"
            reason = stop_reason(self.run)
            if reason is not None:
                return self._end(stopped(reason), f"{reason} before operation {i} of {n} ({what})", i - 1)
            entry: dict[str, Any] = {"order": i, "operation": op["operation"], self.on: op[self.on]}
            started, status, error = time.perf_counter(), TaskStatus.success, ""
            try:
                timeout = self.run.deadline - loop.time() + DRIVER_TIMEOUT_SLACK_SECONDS
                tag = self.tag(i)
                fields, error = await blocking.call(
                    partial(self.apply, op, timeout, tag),
                    cancel=cancel,
                    deadline=self.run.deadline,
                    interrupt=partial(self.interrupt, tag),
                )
                entry.update(fields)
                status = TaskStatus.failed if error else TaskStatus.success
            except Stopped as exc:
                status, error = stopped(exc.reason), f"{exc.reason}; it may have been applied in part"
            except Exception as exc:
                entry.update(getattr(exc, "counts", {}))  # what a failing operation did before it failed
                late = loop.time() >= self.run.deadline  # a client timeout at the deadline is the task's timeout
                status, error = (TaskStatus.timeout if late else TaskStatus.failed), self.message(exc)
            entry.update(elapsed_ms=round((time.perf_counter() - started) * 1000, 3), error=error)
            self.entries.append(entry)
            if status != TaskStatus.success:
                verb = "failed" if status == TaskStatus.failed else "stopped"
                self.run.log(f"[{i}/{n}] {what}: {verb}: {error}", LogLevel.error)
                return self._end(status, f"operation {i} of {n} ({what}) {verb}: {error}", i - 1)
            self.run.log(f"[{i}/{n}] {what}: {self.progress(entry)} in {entry['elapsed_ms']:.0f} ms")
        return self._end(TaskStatus.success, "", n)

    def _end(self, status: TaskStatus, error: str, done: int) -> TargetResult:
        n = len(self.ops)
        summary = [f"{n} operation{'s' * (n != 1)}", f"{done} done"]
        if error:
            summary += [error] + ([f"{n - len(self.entries)} not run"] if len(self.entries) < n else [])
            if done:
                before = "operation 1 before it stays" if done == 1 else f"operations 1-{done} before it stay"
                error += f"; {before} applied (operations are not transactional)"
                summary.append("operations are not transactional: the ones done stay applied")
        text = "\n\n".join([*(self._block(e) for e in self.entries), f"Summary: {'; '.join(summary)}"]) + "\n"
        return TargetResult(self.target, status, error, self.entries, text)

    def _block(self, entry: dict[str, Any]) -> str:
        lines = [
            f"Order ID: {entry['order']}",
            f"Operation: {entry['operation']}",
            f"{self.on_label}: {entry[self.on]}",
        ]
        lines.append(f"Status: {'Execute Failed' if entry['error'] else 'Execute Successfully'}")
        lines += self.details(entry)
        lines.append(f"Execute Time: {entry['elapsed_ms'] / 1000:.3f}s")
        if entry["error"]:
            lines.append(f"Error: {entry['error']}")
        return "\n".join(lines)
