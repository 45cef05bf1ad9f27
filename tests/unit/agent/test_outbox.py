"""The outbox on disk: journals, results, what a crash leaves, and the lock on the data dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.orphans import ProcessRecord
from agent.outbox import DataDirInUse, Outbox, file_stem
from tests.unit.agent.harness import assignment, lines
from wire.tasks import LogLevel, LogLine, LogStream, TaskReport, TaskStatus


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
    assert again.read().result is None
    assert entry.journal_path.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in entry.journal_path.read_text()  # params are not the outbox's business


def test_unflushed_lines_reach_the_file_at_flush(tmp_path: Path) -> None:
    entry, journal = Outbox(tmp_path / "outbox").create(assignment())
    plain = LogLine(seq=2, stream=LogStream.stdout, message="plain ascii")
    journal.line(lines(1)[0], flush=False)  # non-ASCII and a lone surrogate: the fallback encoder
    journal.line(plain, flush=False)
    assert entry.read().lines == []  # still in this process's buffer
    journal.flush()
    assert entry.read().lines == [lines(1)[0], plain]
    journal.close()


def test_the_result_ends_the_journal_and_goes_with_it(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    _entry, journal = outbox.create(assignment())
    journal.line(lines(1)[0], flush=False)
    report = TaskReport(task_token="tok-7", status=TaskStatus.success, exit_code=0, result="x\ny", log_lines=1)
    assert journal.finish(report.model_copy(update={"lines": lines(1)}))
    [again] = outbox.entries()
    contents = again.read()
    assert contents.result == report and contents.lines == lines(1)  # lines are journaled once
    assert [p.name for p in outbox.root.iterdir()] == ["task-7.2.jsonl"]  # one file per attempt
    again.remove()
    assert list(outbox.root.iterdir()) == [] and outbox.entries() == []


def test_a_result_cut_short_by_a_crash_is_no_result(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    journal.line(lines(1)[0])
    journal.close()
    whole = entry.journal_path.stat().st_size
    with entry.journal_path.open("a") as fh:
        fh.write('{"result":{"task_token":"tok-7","status":"succ')  # a kill in the middle of the write
    contents = entry.read()
    assert contents.result is None and contents.lines == lines(1) and contents.valid_bytes == whole


def test_a_result_an_older_agent_left_beside_its_journal_is_delivered(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    entry, journal = outbox.create(assignment())
    journal.line(lines(1)[0])
    journal.close()
    report = TaskReport(task_token="tok-7", status=TaskStatus.failed, exit_code=3, log_lines=1)
    entry.legacy_result_path.write_text(
        report.model_dump_json(exclude={"lines"})
    )  # as agents before the result record did
    [again] = outbox.entries()
    assert again.read().result == report
    again.remove()
    assert list(outbox.root.iterdir()) == []


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


def test_a_second_process_cannot_take_a_data_dir_in_use(tmp_path: Path) -> None:
    first, second = Outbox(tmp_path / "outbox"), Outbox(tmp_path / "outbox")
    first.lock()
    with pytest.raises(DataDirInUse, match=f"in use by another agent process \\(pid {os.getpid()}\\)"):
        second.lock()
    first.unlock()  # as when the first process exits, however it exits
    second.lock()
    second.unlock()


def test_lines_journaled_together_read_back_one_by_one_after_single_ones(tmp_path: Path) -> None:
    entry, journal = Outbox(tmp_path / "outbox").create(assignment())
    journal.line(LogLine(seq=1, message="first"))
    journal.lines(2, LogStream.stderr, None, ["a", "b\\nc", "\udcff"])  # a lone surrogate: the slow encoder
    journal.lines(5, LogStream.system, LogLevel.warn, ["last"])
    journal.close()
    got = [(ln.seq, ln.stream, ln.level, ln.message) for ln in entry.read().lines]
    assert got == [
        (1, LogStream.stdout, None, "first"),
        (2, LogStream.stderr, None, "a"),
        (3, LogStream.stderr, None, "b\\nc"),
        (4, LogStream.stderr, None, "\udcff"),
        (5, LogStream.system, LogLevel.warn, "last"),
    ]
