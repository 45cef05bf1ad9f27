"""The outbox on disk: journals, results, what a crash leaves, and what a restart makes of it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from agent.delivery import RESTARTED, recover
from agent.orphans import ProcessRecord, boot_id, kill_orphans, record, start_time, still_ours
from agent.outbox import DataDirInUse, Outbox, file_stem
from executors.process import group_running
from wire.tasks import Assignment, LogLevel, LogLine, LogStream, TaskReport, TaskStatus, is_lost


def assignment(task_id: str = "task-7", attempt: int = 2) -> Assignment:
    return Assignment(
        id=task_id,
        type="shell",
        command="true",
        params={"password": "s3cret"},
        file_id="",
        env={},
        exec_timeout=60,
        attempt=attempt,
        task_token="tok-7",
        max_log_bytes=1024,
    )


def lines(n: int) -> list[LogLine]:
    return [LogLine(seq=i, stream=LogStream.stdout, message=f"line {i} ünïcode \udcff") for i in range(1, n + 1)]


def test_journal_round_trip(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    for ln in lines(3):
        journal.line(ln)
    journal.process(ProcessRecord(pid=123, start=456, boot="b"))
    journal.line(LogLine(seq=4, stream=LogStream.system, level=LogLevel.warn, message="done"))
    contents = entry.read()  # readable while still open for appending: every record is flushed
    assert contents.lines == [*lines(3), LogLine(seq=4, stream=LogStream.system, level=LogLevel.warn, message="done")]
    assert contents.processes == [ProcessRecord(pid=123, start=456, boot="b")]
    assert contents.valid_bytes == entry.journal_path.stat().st_size
    journal.close()
    [again] = outbox.entries()
    assert (again.task_id, again.attempt, again.task_token) == ("task-7", 2, "tok-7")
    assert again.result() is None
    assert entry.journal_path.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in entry.journal_path.read_text()  # params are not the outbox's business


def test_result_is_written_whole_and_removed_with_the_journal(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    journal.line(lines(1)[0])
    journal.close()
    report = TaskReport(task_token="tok-7", status=TaskStatus.success, exit_code=0, result="x", log_lines=1)
    entry.write_result(report.model_copy(update={"lines": lines(1)}))
    assert entry.result() == report  # lines live in the journal only
    assert sorted(p.name for p in outbox.root.iterdir()) == ["task-7.2.jsonl", "task-7.2.result.json"]
    entry.remove()
    assert list(outbox.root.iterdir()) == []
    assert outbox.entries() == []


def test_a_record_cut_by_a_crash_is_dropped_and_overwritten(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    for ln in lines(2):
        journal.line(ln)
    journal.close()
    good = entry.journal_path.stat().st_size
    with entry.journal_path.open("a") as fh:
        fh.write('[3, "stdout", null, "half a li')  # what a kill in the middle of a write leaves
    contents = entry.read()
    assert contents.lines == lines(2) and contents.valid_bytes == good
    appended = entry.reopen(contents.valid_bytes)
    appended.line(LogLine(seq=3, message="after the restart"))
    appended.close()
    assert [ln.message for ln in entry.read().lines][-1] == "after the restart"
    assert len(entry.read().lines) == 3


def test_entries_clean_what_no_one_could_report(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    _entry, journal = outbox.create(assignment())
    journal.close()
    (outbox.root / "task-8.1.jsonl").write_text('{"task_id": "task-8", "att')  # header cut short
    (outbox.root / "task-9.1.result.json").write_text("{}")  # its journal is gone
    (outbox.root / "task-7.2.result.json.tmp").write_text("{")  # a write that never got renamed
    assert [e.task_id for e in outbox.entries()] == ["task-7"]
    assert sorted(p.name for p in outbox.root.iterdir()) == ["task-7.2.jsonl"]


def test_an_odd_task_id_never_names_a_path() -> None:
    assert file_stem("task-12", 3) == "task-12.3"
    odd = file_stem("../../etc/passwd\nx", 1)
    assert "/" not in odd and "\n" not in odd and odd.endswith(".1")


def spawn_group(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A process group like a task's: a shell leader with a child, in a session of its own."""
    return subprocess.Popen(["/bin/sh", "-c", "sleep 300; echo never"], start_new_session=True, cwd=tmp_path)


def wait_gone(pgid: int) -> bool:
    end = time.monotonic() + 30
    while group_running(pgid) and time.monotonic() < end:
        time.sleep(0.02)
    return not group_running(pgid)


def test_orphans_are_killed_only_when_provably_ours(tmp_path: Path) -> None:
    proc = spawn_group(tmp_path)
    try:
        rec = record(proc.pid)
        assert rec.start == start_time(proc.pid) and rec.start is not None and rec.boot == boot_id()
        assert still_ours(rec)
        # Same pid, another start time: the pid was reused by someone else, whom we must not touch.
        assert kill_orphans("task-1", [ProcessRecord(proc.pid, rec.start + 1, rec.boot)]) == []
        assert kill_orphans("task-1", [ProcessRecord(proc.pid, rec.start, "another-boot")]) == []
        assert proc.poll() is None
        assert kill_orphans("task-1", [rec]) == [proc.pid]
        assert proc.wait(timeout=30) == -9
        assert wait_gone(proc.pid)
        assert not still_ours(rec)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_recover_reports_an_unfinished_attempt_lost_and_kills_its_group(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    _entry, journal = outbox.create(assignment())
    for ln in lines(4):
        journal.line(ln)
    proc = spawn_group(tmp_path)
    try:
        journal.process(record(proc.pid))
        journal.close()  # the agent dies here: no result
        [item] = recover(outbox)
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
    [again] = recover(outbox)
    assert again.report == report and again.lines_from(1) == item.lines_from(1)


def test_recover_keeps_a_finished_result_as_it_is(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    for ln in lines(2):
        journal.line(ln)
    journal.close()
    report = TaskReport(task_token="tok-7", status=TaskStatus.success, exit_code=0, log_lines=2)
    entry.write_result(report)
    [item] = recover(outbox)
    assert item.report == report and item.lines_from(2) == lines(2)[1:]


def test_recover_refuses_to_resend_lines_a_failed_disk_lost(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    journal.line(lines(1)[0])
    journal.close()
    entry.write_result(TaskReport(task_token="tok-7", status=TaskStatus.success, log_lines=3))
    [item] = recover(outbox)
    assert item.lines_from(2) is None


@pytest.mark.parametrize("torn", [False, True])
def test_recover_counts_lines_without_a_torn_tail(tmp_path: Path, torn: bool) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    for ln in lines(3):
        journal.line(ln)
    journal.close()
    if torn:
        with entry.journal_path.open("a") as fh:
            fh.write("[4, ")
    [item] = recover(outbox)
    assert item.report.log_lines == 4
    assert [ln.seq for ln in item.lines_from(1) or []] == [1, 2, 3, 4]


def test_a_second_process_cannot_take_a_data_dir_in_use(tmp_path: Path) -> None:
    first, second = Outbox(tmp_path / "outbox"), Outbox(tmp_path / "outbox")
    first.lock()
    with pytest.raises(DataDirInUse, match=f"in use by another agent process \\(pid {os.getpid()}\\)"):
        second.lock()
    first.unlock()  # as when the first process exits, however it exits
    second.lock()
    second.unlock()
