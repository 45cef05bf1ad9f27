"""Recovery after a crash: the outbox's results and unfinished attempts become results to ship, an
unfinished attempt's process groups are killed, and none of them runs again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ledger import StartedLedger
from agent.orphans import record
from agent.outbox import Entry, Outbox
from agent.recovery import RESTARTED, recover
from tests.unit.agent.harness import assignment, lines, spawn_group, wait_gone
from wire.tasks import LogStream, TaskReport, TaskStatus, is_lost


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[StartedLedger]:
    started = StartedLedger(tmp_path / "started")
    yield started
    started.close()


def test_recover_reports_an_unfinished_attempt_lost_and_kills_its_group(tmp_path: Path, ledger: StartedLedger) -> None:
    outbox = Outbox(tmp_path / "outbox")
    _entry, journal = outbox.create(assignment())
    for ln in lines(4):
        journal.line(ln)
    proc = spawn_group(tmp_path)
    try:
        journal.process(record(proc.pid))
        journal.close()  # the agent dies here: no result
        [item] = recover(outbox, ledger)
        assert proc.wait(timeout=30) == -9 and wait_gone(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    report = item.report
    assert report.status is TaskStatus.failed and report.error == RESTARTED and is_lost(report.error)
    assert report.error.startswith("agent lost: ") and report.log_lines == 5
    assert item.unsent == []  # the cloud's answer says which lines it lacks
    last = item.lines_from(5)
    assert last is not None and len(last) == 1 and last[0].stream is LogStream.system
    assert last[0].message == f"{RESTARTED}; killed process group {proc.pid}"
    assert item.lines_from(1) == [*lines(4), last[0]]
    assert item.lines_from(6) == [] and item.lines_from(7) is None
    # On disk now: a second restart delivers the same report without killing or adding anything.
    [again] = recover(outbox, ledger)
    assert again.report == report and again.lines_from(1) == item.lines_from(1)


def _finished(tmp_path: Path, n: int) -> tuple[Outbox, Entry, TaskReport]:
    """An outbox holding one attempt that logged `n` lines and succeeded: the outbox, its entry, the result."""
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    for ln in lines(n):
        journal.line(ln)
    report = TaskReport(task_token="tok-7", status=TaskStatus.success, exit_code=0, log_lines=n)
    assert journal.finish(report)
    return outbox, entry, report


def test_recover_keeps_a_finished_result_as_it_is(tmp_path: Path, ledger: StartedLedger) -> None:
    outbox, _entry, report = _finished(tmp_path, 2)
    [item] = recover(outbox, ledger)
    assert item.report == report and item.lines_from(2) == lines(2)[1:]


def test_recover_refuses_to_resend_lines_a_failed_disk_lost(tmp_path: Path, ledger: StartedLedger) -> None:
    outbox = Outbox(tmp_path / "outbox")
    _entry, journal = outbox.create(assignment())
    journal.line(lines(1)[0])
    assert journal.finish(TaskReport(task_token="tok-7", status=TaskStatus.success, log_lines=3))
    [item] = recover(outbox, ledger)
    assert item.lines_from(2) is None


def test_recover_keeps_a_result_written_after_a_damaged_record(tmp_path: Path, ledger: StartedLedger) -> None:
    """A record damaged mid-journal (a bad disk block) loses the lines from it on, not the result after it."""
    outbox, entry, report = _finished(tmp_path, 3)
    raw = entry.journal_path.read_bytes().split(b"\n")
    raw[2] = b"\0" * len(raw[2])  # the second line's record (after the header and the first)
    entry.journal_path.write_bytes(b"\n".join(raw))
    [item] = recover(outbox, ledger)
    assert item.report == report
    assert item.lines_from(1) is None  # lines 2 and 3 are gone: the cloud is told, not sent a gap


@pytest.mark.parametrize("torn", [False, True])
def test_recover_counts_lines_without_a_torn_tail(tmp_path: Path, ledger: StartedLedger, torn: bool) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    for ln in lines(3):
        journal.line(ln)
    journal.close()
    if torn:
        with entry.journal_path.open("a") as fh:
            fh.write("[4, ")
    [item] = recover(outbox, ledger)
    assert item.report.log_lines == 4
    assert [ln.seq for ln in item.lines_from(1) or []] == [1, 2, 3, 4]


def test_recovered_attempts_never_run_again(tmp_path: Path, ledger: StartedLedger) -> None:
    outbox = Outbox(tmp_path / "outbox")
    for task_id in ("task-7", "task-8"):
        _entry, journal = outbox.create(assignment(task_id))
        journal.close()
    items = recover(outbox, ledger)
    assert sorted(item.entry.task_id for item in items) == ["task-7", "task-8"]
    assert ledger.started("task-7", 2) and ledger.started("task-8", 2) and not ledger.started("task-7", 3)
    again = StartedLedger(tmp_path / "started")  # on disk: a restart remembers them too
    assert again.started("task-8", 2)
    again.close()
