"""Getting an attempt's result (and the log lines the cloud lacks) from the outbox to the cloud, and
turning the attempts a previous agent process left unfinished into `agent lost` results."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent.client import CloudClient, Rejected, retrying
from agent.orphans import kill_orphans
from agent.outbox import Entry, Outbox
from wire.tasks import AGENT_LOST, LogLevel, LogLine, LogStream, TaskReport, TaskStatus

log = logging.getLogger("tiangong.agent")

RESTARTED = f"{AGENT_LOST}: the agent restarted while the task was running"
"""The error of an attempt a crashed agent left running; the cloud may retry it (`wire.tasks.is_lost`)."""
KEEP_STATUSES = frozenset({401, 403, 429})
"""Refusals that may pass (a token being fixed, a rate limit): the result stays for the next start.
Any other refusal (409 stale or finished, 404 deleted, 422) means resending can never help."""
MAX_ROUNDS = 100
LINES_WITH_RESULT_CHARS = 1024 * 1024
"""Lines ride with the result up to this much text; more go ahead as log batches, so that a result
request carries little more than the output cap (max_log_bytes) whatever the log's tail holds."""

LinesFrom = Callable[[int], "list[LogLine] | None"]


@dataclass
class Pending:
    """A result waiting in the outbox, with what it takes to send the lines the cloud may lack."""

    entry: Entry
    report: TaskReport
    unsent: list[LogLine]
    """Lines believed unsent: they ride with the first result request."""
    lines_from: LinesFrom
    """The attempt's lines from a seq on (when the cloud asks for a resend); None when gone."""


def recover(outbox: Outbox) -> list[Pending]:
    """What a previous agent process left in the outbox, ready for delivery.

    An attempt without a result was running when that process died: its process groups are killed
    (when provably still the ones it started) and it gets a `failed` result saying the agent was lost,
    after one last system line. It never runs again.
    """
    out = []
    for entry in outbox.entries():
        try:
            contents = entry.read()
            lines = contents.lines
            report = entry.result()
            if report is None:
                killed = kill_orphans(entry.task_id, contents.processes)
                note = RESTARTED + (f"; killed process group {', '.join(map(str, killed))}" if killed else "")
                lost = LogLine(seq=len(lines) + 1, stream=LogStream.system, level=LogLevel.error, message=note)
                journal = entry.reopen(contents.valid_bytes)
                journal.line(lost)
                journal.close()
                lines.append(lost)
                report = TaskReport(
                    task_token=entry.task_token, status=TaskStatus.failed, error=RESTARTED, log_lines=len(lines)
                )
                entry.write_result(report)
                log.warning("%s (attempt %d): %s", entry.task_id, entry.attempt, note)
        except OSError as exc:
            log.error("%s: outbox entry unreadable (%s); left for the next start", entry.task_id, exc)
            continue
        if len(lines) < report.log_lines:
            log.error("%s: the outbox holds %d of %d log lines", entry.task_id, len(lines), report.log_lines)
        # The cloud's answer to the result tells which lines it lacks: send none up front.
        out.append(Pending(entry, report, [], functools.partial(_slice, lines, report.log_lines)))
    return out


def _chars(lines: list[LogLine]) -> int:
    return sum(len(ln.message) for ln in lines)


def _slice(lines: list[LogLine], total: int, seq: int) -> list[LogLine] | None:
    """Lines from `seq` on, when they are all here (a journal whose disk failed may lack some)."""
    return lines[seq - 1 : total] if len(lines) >= total and 1 <= seq <= total + 1 else None


async def deliver(client: CloudClient, item: Pending, batch_lines: int) -> bool:
    """Send the result (resending lines the cloud asks for) until it is accepted or refused for good.

    True when the entry is settled and removed; False when it stays in the outbox for the next start.
    Retries while the cloud is unreachable: cancel the task to stop (the outbox keeps the result).
    """
    entry, unsent, task_id = item.entry, item.unsent, item.entry.task_id
    for _ in range(MAX_ROUNDS):
        # A result carries at most one batch of lines; a longer tail goes ahead in batches first.
        while len(unsent) > batch_lines or _chars(unsent) > LINES_WITH_RESULT_CHARS:
            call = functools.partial(client.post_logs, task_id, entry.task_token, unsent[:batch_lines])
            try:
                next_seq = await retrying(call, f"{task_id} log")
            except Rejected as exc:
                if exc.next_seq is None:
                    return _refused(entry, exc, "log lines")
                next_seq = exc.next_seq
            if (resend := item.lines_from(next_seq)) is None:
                return _lost_lines(entry, next_seq)
            unsent = resend
        body = item.report.model_copy(update={"lines": unsent})
        try:
            await retrying(functools.partial(client.post_result, task_id, body), f"{task_id} result")
        except Rejected as exc:
            if exc.next_seq is None:
                return _refused(entry, exc, "result")
            if (resend := item.lines_from(exc.next_seq)) is None:
                return _lost_lines(entry, exc.next_seq)
            unsent = resend
            continue
        _remove(entry)
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


def _lost_lines(entry: Entry, next_seq: int) -> bool:
    log.error("%s: the cloud wants log lines from seq %d, which this agent no longer has", entry.task_id, next_seq)
    _remove(entry)
    return True


def _remove(entry: Entry) -> None:
    try:
        entry.remove()
    except OSError as exc:  # the next start resends it, and the cloud answers a resend idempotently
        log.error("%s: cannot remove the delivered result from the outbox: %s", entry.task_id, exc)
