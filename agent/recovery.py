"""After a crash: what a previous agent process left in the outbox becomes results to ship, the attempts
it left running become `agent lost` results (their orphaned process groups killed), and none runs again."""

from __future__ import annotations

import functools
import logging

from agent.ledger import StartedLedger
from agent.orphans import kill_orphans
from agent.outbox import Entry, Outbox
from agent.shipping import Pending, journal_slice
from wire.tasks import AGENT_LOST, LogLevel, LogLine, LogStream, TaskReport, TaskStatus

log = logging.getLogger("tiangong.agent")

RESTARTED = f"{AGENT_LOST}: the agent restarted while the task was running"
"""The error of an attempt a crashed agent left running; the cloud may retry it (`wire.tasks.is_lost`)."""


def recover(outbox: Outbox, ledger: StartedLedger) -> list[Pending]:
    """What a previous agent process left in the outbox, ready for delivery, each recorded as started.

    An attempt without a result was running when that process died: its process groups are killed
    (when provably still the ones it started) and it gets a `failed` result saying the agent was lost,
    after one last system line. It never runs again.
    """
    out = []
    for entry in outbox.entries():
        try:
            item = _pending(entry)
        except OSError as exc:
            log.error("%s: outbox entry unreadable (%s); left for the next start", entry.task_id, exc)
            continue
        if not ledger.started(entry.task_id, entry.attempt):
            try:
                ledger.add(entry.task_id, entry.attempt)  # a duplicated claim of it must not start it again
            except OSError as exc:  # remembered in memory all the same; the other entries still ship
                log.error("%s: cannot record the start on disk: %s", entry.task_id, exc)
        out.append(item)
    return out


def _pending(entry: Entry) -> Pending:
    """The entry's result (made now if the attempt never finished) and its journaled lines."""
    contents = entry.read()
    lines = contents.lines
    report = contents.result
    if report is None:
        killed = kill_orphans(entry.task_id, contents.processes)
        note = RESTARTED + (f"; killed process group {', '.join(map(str, killed))}" if killed else "")
        lost = LogLine(seq=len(lines) + 1, stream=LogStream.system, level=LogLevel.error, message=note)
        lines.append(lost)
        report = TaskReport(
            task_token=entry.task_token, status=TaskStatus.failed, error=RESTARTED, log_lines=len(lines)
        )
        journal = entry.reopen(contents.valid_bytes)
        journal.line(lost)
        if not journal.finish(report):
            raise OSError(f"cannot store the result of {entry.task_id} in the outbox")
        log.warning("%s (attempt %d): %s", entry.task_id, entry.attempt, note)
    if len(lines) < report.log_lines:
        log.error("%s: the outbox holds %d of %d log lines", entry.task_id, len(lines), report.log_lines)
    # The cloud's answer to the result tells which lines it lacks: send none up front.
    return Pending(entry, report, [], functools.partial(journal_slice, lines, report.log_lines))
