"""Process groups a task started, recorded so that an agent restarted after a crash can kill what its
previous life left running, and only that: a pid is ours when it still has the start time we saw."""

from __future__ import annotations

import functools
import logging
import os
import signal
from dataclasses import dataclass

from executors.procs import proc_stat

log = logging.getLogger("tiangong.agent")


@dataclass(frozen=True)
class ProcessRecord:
    """The leader of a process group a task started (its pid is the group's id)."""

    pid: int
    start: int | None
    """Start time in clock ticks since boot (/proc/<pid>/stat field 22); None without procfs."""
    boot: str
    """The kernel's boot id: after a reboot the same pid and start time mean nothing."""


@functools.cache
def boot_id() -> str:
    """This boot of the machine ("" when the kernel does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot; None when it is gone or there is no procfs."""
    fields = proc_stat(pid)  # from field 3 (state) on: starttime, field 22, is at index 19
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def record(pid: int) -> ProcessRecord:
    """What proves later that `pid` is still the process we started now."""
    return ProcessRecord(pid=pid, start=start_time(pid), boot=boot_id())


def still_ours(rec: ProcessRecord) -> bool:
    """Whether the recorded leader still exists (running, or a zombie nobody reaped) as that very process.

    While the leader exists its pid cannot be reused, so the group is still the one the task made.
    """
    if rec.start is None or not rec.boot or rec.boot != boot_id():
        return False
    return start_time(rec.pid) == rec.start


def kill_orphans(task_id: str, records: list[ProcessRecord]) -> list[int]:
    """SIGKILL every recorded process group whose leader is provably still ours; returns their ids.

    A group whose leader exited is left alone: its pid may belong to someone else by now, and a
    leader that exited ended the task's command normally (daemons it left are left on purpose).
    """
    killed = []
    for rec in records:
        if not still_ours(rec):
            continue
        try:
            os.killpg(rec.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        except PermissionError as exc:
            log.error("%s: cannot kill orphaned process group %d: %s", task_id, rec.pid, exc)
            continue
        log.warning("%s: killed process group %d left running by the previous agent process", task_id, rec.pid)
        killed.append(rec.pid)
    return killed
