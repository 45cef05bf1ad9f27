"""The ledger of started attempts: checked before a start, kept across restarts, pruned."""

from __future__ import annotations

from pathlib import Path

from agent.ledger import StartedLedger


def test_an_attempt_is_started_once_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "started"
    ledger = StartedLedger(path)
    assert not ledger.started("task-1", 1)
    ledger.add("task-1", 1)
    assert ledger.started("task-1", 1)
    assert not ledger.started("task-1", 2)  # a retry is a new attempt
    assert not ledger.started("task-2", 1)
    ledger.add("task-1", 3)
    assert ledger.started("task-1", 2)  # an older attempt never runs after a newer one
    # No close(): as after a crash, what was flushed is what the next process finds.
    again = StartedLedger(path)
    assert again.started("task-1", 3) and not again.started("task-1", 4) and not again.started("task-2", 1)
    ledger.close()
    again.close()


def test_a_line_cut_by_a_crash_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "started"
    path.write_text("task-1 1\ntask-2 ")
    ledger = StartedLedger(path)
    assert ledger.started("task-1", 1) and not ledger.started("task-2", 1)
    ledger.add("task-3", 1)
    ledger.close()
    assert path.read_text() == "task-1 1\ntask-3 1\n"  # compacted on start, so the cut line is gone


def test_old_records_are_pruned_newest_kept(tmp_path: Path) -> None:
    path = tmp_path / "started"
    ledger = StartedLedger(path, keep=10)
    for n in range(1, 26):
        ledger.add(f"task-{n}", 1)
    ledger.add("task-20", 2)  # a restarted task counts as new again
    assert not ledger.started("task-1", 1) and ledger.started("task-25", 1) and ledger.started("task-16", 1)
    ledger.close()
    assert len(path.read_text().splitlines()) <= 20  # rewritten when it grew past twice `keep`
    again = StartedLedger(path, keep=10)
    assert again.started("task-20", 2) and again.started("task-25", 1) and not again.started("task-10", 1)
    again.close()


def test_odd_task_ids_cannot_break_the_file(tmp_path: Path) -> None:
    path = tmp_path / "started"
    ledger = StartedLedger(path)
    ledger.add("task 1\ntask-2 9", 1)
    ledger.close()
    again = StartedLedger(path)
    assert again.started("task 1\ntask-2 9", 1) and not again.started("task-2", 1)
    again.close()
