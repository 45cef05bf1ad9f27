"""Shipping an attempt's log lines and result to the cloud: live batches while it runs, then the result
from the outbox (with the lines the cloud lacks), resending from the cloud's `next_seq` in one place."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass

from agent.client import CloudClient, CloudUnavailable, Rejected, retrying
from agent.outbox import Entry, Journal
from wire.tasks import MAX_BATCH_LINES, Assignment, LogLevel, LogLine, LogStream, TaskReport, line_count

log = logging.getLogger("tiangong.agent")

KEEP_STATUSES = frozenset({401, 403, 429})
"""Refusals that may pass (a token being fixed, a rate limit): the result stays for the next start.
Any other refusal (409 stale or finished, 404 deleted, 422) means resending can never help."""
MAX_ROUNDS = 100
LINES_WITH_RESULT_CHARS = 1024 * 1024
"""Lines ride with the result up to this much text; more go ahead as log batches, so that a result
request carries little more than the output cap (max_log_bytes) whatever the log's tail holds."""
BATCH_CHARS = 1024 * 1024
"""A live batch is shipped once it holds this much text, whatever its line count: a request stays
around a megabyte (well under the cloud's agent body limit) even for long lines."""

LinesFrom = Callable[[int], "list[LogLine] | None"]
Item = tuple[LogStream, LogLevel | None, str]
"""A line waiting to be shipped: its seq is its place after the first unacknowledged one."""


def as_runs(first_seq: int, items: list[Item]) -> list[LogLine]:
    """`items` from seq `first_seq` on as runs: a LogLine per stretch of one stream and level (of at most
    MAX_BATCH_LINES lines), the rest of its lines in `more` (a LogLine per line cost the agent and the
    cloud more than the rest of shipping)."""
    runs: list[LogLine] = []
    seq = first_seq
    for (stream, level), group in itertools.groupby(items, key=_kind):
        messages = [item[2] for item in group]
        for at in range(0, len(messages), MAX_BATCH_LINES):
            part = messages[at : at + MAX_BATCH_LINES]
            runs.append(LogLine(seq=seq, stream=stream, level=level, message=part[0], more=part[1:] or None))
            seq += len(part)
    return runs


_kind = operator.itemgetter(0, 1)


def split_runs(lines: list[LogLine], max_lines: int, max_chars: int) -> tuple[list[LogLine], list[LogLine]]:
    """The first batch of `lines` (runs or single lines: up to max_lines lines and max_chars of text, at
    least one line) and the rest, a run cut in two where the limit falls inside it."""
    taken, chars = 0, 0
    for i, ln in enumerate(lines):
        messages = ln.messages()
        for j, message in enumerate(messages):
            chars += len(message)
            if taken >= max_lines or (chars > max_chars and taken > 0):
                if j == 0:
                    return lines[:i], lines[i:]
                head = ln.model_copy(update={"more": messages[1:j] or None})
                rest = {"seq": ln.seq + j, "message": messages[j], "more": messages[j + 1 :] or None}
                tail = ln.model_copy(update=rest)
                return [*lines[:i], head], [tail, *lines[i + 1 :]]
            taken += 1
    return lines, []


class LinesLost(Exception):
    """The cloud wants log lines from a seq this agent no longer has: the attempt's log cannot be completed."""


def journal_slice(lines: list[LogLine], total: int, seq: int) -> list[LogLine] | None:
    """Lines from `seq` on, when all `total` are here (a journal whose disk failed may lack some)."""
    return lines[seq - 1 : total] if len(lines) >= total and 1 <= seq <= total + 1 else None


def resend_from(task_id: str, lines_from: LinesFrom, next_seq: int) -> list[LogLine]:
    """The lines the cloud lacks, from the `next_seq` it named (accepting a batch, or refusing a gap)."""
    lines = lines_from(next_seq)
    if lines is None:
        log.error("%s: the cloud wants log lines from seq %d, which this agent no longer has", task_id, next_seq)
        raise LinesLost(next_seq)
    return lines


async def post_batch(client: CloudClient, task_id: str, token: str, batch: list[LogLine]) -> int:
    """Post one batch; the seq the cloud expects next (after a gap: the seq to resend from). Rejected
    (no resend asked) and CloudUnavailable propagate."""
    try:
        return await client.post_logs(task_id, token, batch)
    except Rejected as exc:
        if exc.next_seq is None:
            raise
        return exc.next_seq  # a gap: the cloud names where to resend from


async def send_batch(
    client: CloudClient, task_id: str, token: str, batch: list[LogLine], lines_from: LinesFrom
) -> list[LogLine]:
    """Post one batch; the lines still to send after the cloud's answer. Rejected (no resend asked),
    LinesLost and CloudUnavailable propagate."""
    return resend_from(task_id, lines_from, await post_batch(client, task_id, token, batch))


class LogShipper:
    """Numbers lines (contiguous seq from 1), journals them in the outbox, ships them in batches by size or age.

    Unacknowledged lines are kept and travel with the result when the task ends first, so a short
    task costs no extra request. Resends follow the cloud's `next_seq` (read back from the journal
    when memory no longer has them). Lines are kept as plain tuples and leave as runs (`as_runs`).
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
        self._pending: list[Item] = []
        self._pending_chars = 0  # text held in _pending, for the batch's size limit
        self._next_seq = 1
        self._wake = asyncio.Event()
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        """Started with the first line: a task that logs nothing costs no shipping task at all."""

    @property
    def total(self) -> int:
        """How many lines the attempt has logged so far."""
        return self._next_seq - 1

    @property
    def _first(self) -> int:
        """The seq of the first line not acknowledged."""
        return self._next_seq - len(self._pending)

    def add(self, message: str, stream: LogStream, level: LogLevel | None) -> None:
        """Number and journal a line, then queue it for the next batch."""
        self.add_many([message], stream, level)

    def add_many(self, messages: list[str], stream: LogStream, level: LogLevel | None) -> None:
        """Number and journal several lines of one stream, then queue them for the next batch."""
        if not messages:
            return
        # Buffered here; flushed to the kernel before any batch or result carrying them leaves (_ship,
        # finish): a line no one has seen yet is no worse off in this buffer than in the pipe it came from.
        self._journal.lines(self._next_seq, stream, level, messages, flush=False)
        was_empty = not self._pending
        self._pending.extend([(stream, level, message) for message in messages])
        self._pending_chars += sum(map(len, messages))
        self._next_seq += len(messages)
        if was_empty or self._full():
            # The first line starts the batch's clock; a full batch goes at once. Not woken per line.
            self._wake.set()
            if self._runner is None and not self._closing:
                self._runner = asyncio.create_task(self._run(), name=f"logs-{self._task.id}")

    def _full(self) -> bool:
        return len(self._pending) >= self.batch_lines or self._pending_chars >= BATCH_CHARS

    def lines_from(self, seq: int) -> list[LogLine] | None:
        """This attempt's lines from `seq` on, from memory or else from the journal; None if lost."""
        first = self._first
        if seq >= first:
            return as_runs(seq, self._pending[seq - first :])  # contiguous seqs: a slice, not a scan
        self._journal.flush()  # the journal must hold every line numbered so far to answer
        try:
            lines = self._entry.read().lines
        except OSError:
            return None
        return journal_slice(lines, self.total, seq)

    def unsent(self) -> list[LogLine]:
        """The lines not acknowledged yet: they ride with the result."""
        return as_runs(self._first, self._pending)

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if not self._full() and not self._closing:
                # Let lines gather up to a batch (or the task end, so they ride with the result). The
                # closing check first: a close that came with the first line was cleared just above.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
                self._wake.clear()
            if self._closing:
                return
            await self._ship()

    async def _ship(self) -> None:
        task = self._task
        while self._pending and not self._closing:
            batch, _ = split_runs(
                as_runs(self._first, self._pending[: self.batch_lines]), self.batch_lines, BATCH_CHARS
            )
            self._journal.flush()  # the lines are in the kernel before the cloud can show them
            try:
                self._acknowledge(await post_batch(self._client, task.id, task.task_token, batch))
            except Rejected as exc:
                log.warning("%s: log batch refused: %s", task.id, exc.message)
                self._closing = True  # stale attempt: stop shipping, the report will say so
            except LinesLost:
                self._closing = True
            except CloudUnavailable:
                await asyncio.sleep(min(1.0, self._flush_seconds * 10))  # keep lines; try again later

    def _acknowledge(self, next_seq: int) -> None:
        """The cloud holds every line before `next_seq`: drop those from memory. When it wants lines
        memory no longer holds (it lost some), they come back from the journal (LinesLost if gone)."""
        first = self._first
        if next_seq >= first:
            dropped = min(next_seq - first, len(self._pending))
            self._pending_chars -= sum(len(item[2]) for item in self._pending[:dropped])
            del self._pending[:dropped]
            return
        lines = resend_from(self._task.id, self.lines_from, next_seq)
        self._pending = [(ln.stream, ln.level, m) for ln in lines for m in ln.messages()]
        self._pending_chars = sum(len(item[2]) for item in self._pending)

    async def close(self) -> None:
        """Stop shipping; an in-flight batch completes first. Unsent lines stay for the report."""
        self._closing = True
        self._wake.set()
        if self._runner is not None:
            await self._runner

    def abort(self) -> None:
        """Stop at once (the attempt was abandoned; its journal tells a restarted agent the rest)."""
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()


@dataclass
class Pending:
    """A result waiting in the outbox, with what it takes to send the lines the cloud may lack."""

    entry: Entry
    report: TaskReport
    unsent: list[LogLine]
    """Lines believed unsent: they ride with the first result request."""
    lines_from: LinesFrom
    """The attempt's lines from a seq on (when the cloud asks for a resend); None when gone."""


def _too_long(lines: list[LogLine], batch_lines: int) -> bool:
    if line_count(lines) > batch_lines:
        return True
    return sum(len(ln.message) + (sum(map(len, ln.more)) if ln.more else 0) for ln in lines) > LINES_WITH_RESULT_CHARS


async def deliver(client: CloudClient, item: Pending, batch_lines: int) -> bool:
    """Send the result (resending lines the cloud asks for) until it is accepted or refused for good.

    True when the entry is settled and removed; False when it stays in the outbox for the next start.
    Retries while the cloud is unreachable: cancel the task to stop (the outbox keeps the result).
    """
    entry, unsent, task_id = item.entry, item.unsent, item.entry.task_id
    try:
        for _ in range(MAX_ROUNDS):
            # A result carries at most one batch of lines; a longer tail goes ahead in batches first.
            while _too_long(unsent, batch_lines):
                batch, _ = split_runs(unsent, batch_lines, BATCH_CHARS)
                call = functools.partial(send_batch, client, task_id, entry.task_token, batch, item.lines_from)
                try:
                    unsent = await retrying(call, f"{task_id} log")
                except Rejected as exc:
                    return _refused(entry, exc, "log lines")
            body = item.report.model_copy(update={"lines": unsent})
            try:
                await retrying(functools.partial(client.post_result, task_id, body), f"{task_id} result")
            except Rejected as exc:
                if exc.next_seq is None:
                    return _refused(entry, exc, "result")
                unsent = resend_from(task_id, item.lines_from, exc.next_seq)
                continue
            _remove(entry)
            return True
    except LinesLost:
        _remove(entry)  # the log can never be completed: the cloud ends the task without this report
        return True
    log.error("%s: result not accepted after %d log resends; it stays in the outbox", task_id, MAX_ROUNDS)
    return False


def _refused(entry: Entry, exc: Rejected, what: str) -> bool:
    if exc.status in KEEP_STATUSES:
        log.error("%s: %s refused (%s); the result stays in the outbox for the next start", entry.task_id, what, exc)
        return False
    # Typically a 409: the attempt is stale (retried, reaped) or the task already finished otherwise.
    log.warning("%s: %s refused (%s); resending cannot help, dropping the result", entry.task_id, what, exc)
    _remove(entry)
    return True


def _remove(entry: Entry) -> None:
    try:
        entry.remove()
    except OSError as exc:  # the next start resends it, and the cloud answers a resend idempotently
        log.error("%s: cannot remove the delivered result from the outbox: %s", entry.task_id, exc)


class Deliveries:
    """Results on their way to the cloud, one asyncio task each; what is not delivered stays in the outbox."""

    def __init__(self, client: CloudClient, batch_lines: int) -> None:
        self._client, self._batch_lines = client, batch_lines
        self._jobs: dict[asyncio.Task[bool], Entry] = {}

    def send(self, item: Pending) -> None:
        """Start delivering `item` in the background."""
        entry = item.entry
        job = asyncio.create_task(deliver(self._client, item, self._batch_lines), name=f"deliver-{entry.task_id}")
        self._jobs[job] = entry
        job.add_done_callback(self._done)

    def tokens(self) -> dict[str, str]:
        """Task id -> task_token of the results in flight (the newest attempt's when several)."""
        return {entry.task_id: entry.task_token for entry in self._jobs.values()}

    def _done(self, job: asyncio.Task[bool]) -> None:
        entry = self._jobs.pop(job, None)
        if not job.cancelled() and (exc := job.exception()) is not None:
            task_id = entry.task_id if entry is not None else "?"
            log.error("%s: delivery failed; the result stays in the outbox", task_id, exc_info=exc)

    async def settle(self, timeout: float) -> None:
        """Wait up to `timeout` for results in flight; the rest stay in the outbox for the next start."""
        pending: set[asyncio.Task[bool]] = set(self._jobs)
        if pending and timeout > 0:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        if pending:
            log.warning("%d result(s) not delivered yet; kept in the outbox for the next start", len(pending))
            for job in pending:
                job.cancel()
            await asyncio.wait(pending)
