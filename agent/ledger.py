"""The attempts this agent has started, in memory and on disk, so that no (task, attempt) runs twice:
not when the same claim reply arrives twice, and not after a restart."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TextIO

from agent.outbox import safe_name

log = logging.getLogger("tiangong.agent")

KEEP = 50_000
"""Tasks remembered (the most recently started); a duplicated claim reply arrives within seconds, and
50,000 tasks cost a few MB of memory."""


class StartedLedger:
    """Task id -> the highest attempt started, kept newest last; one `<task_id> <attempt>` line per start.

    Appended and flushed before the attempt starts (no fsync: the fault model is a crash of this
    process, not of the machine); rewritten with the newest KEEP tasks when it grows past twice that.
    """

    def __init__(self, path: Path, keep: int = KEEP) -> None:
        self.path, self.keep = path, keep
        self._attempts: dict[str, int] = {}
        self._lines = 0
        self._torn = False
        self._load()
        if self._torn or self._lines > len(self._attempts):
            self._compact()
        self._fh: TextIO = self._open()

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return open(fd, "a", encoding="utf-8")  # kept open for the process's life

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        # A crash may cut the last line: appending after it would glue the next record onto it.
        self._torn = bool(text) and not text.endswith("\n")
        for row in text.splitlines():
            task_id, _, attempt = row.rpartition(" ")
            if not task_id or not attempt.isdigit():
                self._torn = True
                continue
            self._lines += 1
            self._remember(task_id, int(attempt))
        while len(self._attempts) > self.keep:
            del self._attempts[next(iter(self._attempts))]

    def _remember(self, task_id: str, attempt: int) -> None:
        previous = self._attempts.pop(task_id, 0)
        self._attempts[task_id] = max(previous, attempt)  # re-inserted: now the newest

    def started(self, task_id: str, attempt: int) -> bool:
        """Whether this attempt (or a later one of the same task) was started here before."""
        return self._attempts.get(safe_name(task_id), 0) >= attempt

    def add(self, task_id: str, attempt: int) -> None:
        """Record a start, on disk before it happens (in memory even when the disk fails: OSError)."""
        task_id = safe_name(task_id)
        self._remember(task_id, attempt)
        if len(self._attempts) > self.keep:
            del self._attempts[next(iter(self._attempts))]
        self._fh.write(f"{task_id} {attempt}\n")
        self._fh.flush()
        self._lines += 1
        if self._lines > 2 * self.keep:
            self._fh.close()
            self._compact()
            self._fh = self._open()

    def _compact(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            fh.writelines(f"{task_id} {attempt}\n" for task_id, attempt in self._attempts.items())
        os.replace(tmp, self.path)
        self._lines = len(self._attempts)

    def close(self) -> None:
        self._fh.close()
