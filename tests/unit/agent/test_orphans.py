"""Orphaned process groups: recorded when a task starts them, killed after a crash only when provably ours."""

from __future__ import annotations

import os
from pathlib import Path

from agent.orphans import ProcessRecord, boot_id, kill_orphans, record, start_time, still_ours
from tests.unit.agent.harness import spawn_group, wait_gone


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
