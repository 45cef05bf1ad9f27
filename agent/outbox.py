"""The agent's outbox on disk (`<data_dir>/outbox/`): for each (task, attempt) a journal of its log
lines and process groups, then its result; both removed once the cloud has acknowledged the result.

Durability: every journal record is flushed to the kernel as it is written, except log lines, which are
flushed before any batch or result carrying them leaves the agent (so a line the cloud has seen is
always in the kernel); nothing is fsynced, and a
result is written to a temporary file and renamed into place. The fault model is a crash of the agent
process (SIGKILL, OOM kill, a bug), after which the kernel still holds everything flushed; a crash of
the machine itself may lose the last records, which is the price of a fast hot path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from agent.orphans import ProcessRecord
from agent.private import private_dir
from wire.tasks import Assignment, LogLevel, LogLine, LogStream, TaskReport

log = logging.getLogger("tiangong.agent")

JOURNAL_SUFFIX = ".jsonl"
RESULT_SUFFIX = ".result.json"
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def safe_name(task_id: str) -> str:
    """The task id itself when plain (the cloud's are: `task-12`), else a hash, so that it never names
    another path, nor breaks a line of the started ledger."""
    if _PLAIN_ID.fullmatch(task_id):
        return task_id
    return "x" + hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def file_stem(task_id: str, attempt: int) -> str:
    """`task-12.3`: the name of an attempt's files."""
    return f"{safe_name(task_id)}.{attempt}"


def _create(path: Path) -> TextIO:
    """A new file only this user may read: it holds the attempt's token and the task's output."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return open(fd, "w", encoding="utf-8")


class Journal:
    """The append side of one attempt's journal: one JSON value per line, flushed as written.

    A disk that fails mid-task must not fail the task: the journal then stops, says so once, and the
    attempt carries on from memory (it can no longer be recovered after a crash).
    """

    def __init__(self, fh: TextIO | None, task_id: str) -> None:
        self._fh = fh
        self._task_id = task_id

    def header(self, task: Assignment) -> None:
        """The first record: what a restarted agent needs to report the attempt."""
        self._write(json.dumps({"task_id": task.id, "attempt": task.attempt, "task_token": task.task_token}))

    def line(self, ln: LogLine, flush: bool = True) -> None:
        """Append a log line (as `[seq, stream, level, message]`, compact and quick to write). With
        `flush=False` it stays in this process's buffer until `flush` (a write call per line was the
        agent's largest cost on a chatty task)."""
        self.lines(ln.seq, ln.stream, ln.level, ln.messages(), flush)

    def lines(
        self, first_seq: int, stream: LogStream, level: LogLevel | None, messages: list[str], flush: bool = True
    ) -> None:
        """Append several lines of one stream (seqs from `first_seq`) as one record, `[seq, stream, level,
        [message, ...]]`: an encode per line was the agent's largest cost after the line objects."""
        record = [first_seq, stream.value, level and level.value, messages[0] if len(messages) == 1 else messages]
        try:
            # orjson: the standard library's encoder was a fifth of the agent's time on a chatty task.
            text = orjson.dumps(record).decode()
        except TypeError:  # a lone surrogate, which orjson refuses: escaped by the standard library
            text = json.dumps(record)
        self._write(text, flush)

    def process(self, rec: ProcessRecord) -> None:
        """Append a process group the attempt started."""
        self._write(json.dumps({"pid": rec.pid, "start": rec.start, "boot": rec.boot}))

    def flush(self) -> None:
        """Hand what was written to the kernel: it survives a crash of this process from now on."""
        if self._fh is None:
            return
        try:
            self._fh.flush()
        except OSError as exc:
            self._failed(exc)

    def _write(self, text: str, flush: bool = True) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(text + "\n")
            if flush:
                self._fh.flush()  # in the kernel now: survives a crash of this process
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        log.error("%s: outbox journal failed (%s); the attempt is not recoverable after a crash", self._task_id, exc)
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


@dataclass
class Contents:
    """What a journal holds: log lines (contiguous from seq 1) and process groups."""

    lines: list[LogLine]
    processes: list[ProcessRecord]
    valid_bytes: int
    """Length of the part that parsed; past it lies a record cut short by a crash, if anything."""


@dataclass
class Entry:
    """One attempt in the outbox: `<stem>.jsonl` (header, lines, processes) and `<stem>.result.json`."""

    task_id: str
    attempt: int
    task_token: str
    journal_path: Path

    @property
    def result_path(self) -> Path:
        return self.journal_path.with_name(self.journal_path.name.removesuffix(JOURNAL_SUFFIX) + RESULT_SUFFIX)

    def write_result(self, report: TaskReport) -> None:
        """Store the result (without its lines, which are in the journal) atomically: tmp file + rename."""
        tmp = self.result_path.with_name(self.result_path.name + ".tmp")
        with _create(tmp) as fh:
            fh.write(report.model_dump_json(exclude={"lines"}))
        os.replace(tmp, self.result_path)

    def result(self) -> TaskReport | None:
        """The stored result, if the attempt got that far."""
        try:
            return TaskReport.model_validate_json(self.result_path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:  # cannot happen through write_result's rename; say so if it does
            log.error("%s: unreadable result in the outbox (%s); treating the attempt as unfinished", self.task_id, exc)
            return None

    def read(self) -> Contents:
        """The journal's lines and processes, up to the first record that does not parse."""
        raw = self.journal_path.read_bytes()
        lines: list[LogLine] = []
        processes: list[ProcessRecord] = []
        valid = raw.index(b"\n") + 1 if b"\n" in raw else 0  # the header was checked by Outbox.entries
        for record in raw[valid:].split(b"\n")[:-1]:  # the last piece has no newline: unfinished
            try:
                value = json.loads(record)
                if isinstance(value, list):
                    seq, stream, level, message = value
                    if seq != len(lines) + 1:
                        raise ValueError(f"seq {seq} out of order")
                    for i, text in enumerate(message if isinstance(message, list) else [message]):
                        lines.append(LogLine(seq=seq + i, stream=stream, level=level, message=text))
                else:
                    processes.append(ProcessRecord(pid=int(value["pid"]), start=value["start"], boot=value["boot"]))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("%s: outbox journal cut at a bad record (%s)", self.task_id, exc)
                break
            valid += len(record) + 1
        return Contents(lines, processes, valid)

    def reopen(self, valid_bytes: int) -> Journal:
        """Append after the part that parsed, dropping a record a crash cut short."""
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND)
        os.ftruncate(fd, valid_bytes)
        return Journal(open(fd, "a", encoding="utf-8"), self.task_id)

    def remove(self) -> None:
        """The cloud has the result (or can never take it): forget the attempt. Result first, so a crash
        in between leaves an unfinished attempt whose late `agent lost` report the cloud refuses."""
        self.result_path.unlink(missing_ok=True)
        self.journal_path.unlink(missing_ok=True)


class DataDirInUse(Exception):
    """Another live agent process holds this outbox."""


class Outbox:
    """The outbox directory of one agent process (data dirs are not shared between processes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        private_dir(root, deep=True)  # tokens and task output: 0700, and tightened if an old one is looser
        self._lock: int | None = None

    def lock(self) -> None:
        """Hold the outbox for this process's life. A second process on the same data dir would take
        the first one's running attempts for a crashed life's, report them lost and kill their processes.
        The kernel drops the lock when the process dies, however it dies."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise DataDirInUse(
                f"{self.root.parent} is in use by another agent process (pid {holder}); give each process its own "
                "--data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def create(self, task: Assignment) -> tuple[Entry, Journal]:
        """A new entry for an attempt about to start; its journal starts with the header.

        When the disk refuses, the attempt still runs, from memory only (said once in the log)."""
        path = self.root / (file_stem(task.id, task.attempt) + JOURNAL_SUFFIX)
        entry = Entry(task.id, task.attempt, task.task_token, path)
        try:
            entry.result_path.unlink(missing_ok=True)  # never pair a fresh journal with an old result
            fh: TextIO | None = _create(path)
        except OSError as exc:
            log.error("%s: cannot create its outbox journal (%s); it runs without one", task.id, exc)
            fh = None
        journal = Journal(fh, task.id)
        journal.header(task)
        return entry, journal

    def entries(self) -> list[Entry]:
        """The attempts left here, oldest first. What cannot be one (a journal a crash cut before its
        header, a result without its journal, a temporary file) is removed: nobody could report it."""
        for tmp in self.root.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        found = []
        for path in sorted(self.root.glob("*" + JOURNAL_SUFFIX), key=_mtime):
            header = _header(path)
            if header is None:
                log.warning("outbox: removing %s, which has no complete header", path.name)
                path.unlink(missing_ok=True)
                continue
            found.append(Entry(header["task_id"], header["attempt"], header["task_token"], path))
        journals = {entry.result_path for entry in found}
        for path in self.root.glob("*" + RESULT_SUFFIX):
            if path not in journals:
                log.warning("outbox: removing %s, whose journal is gone", path.name)
                path.unlink(missing_ok=True)
        return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _header(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh:
            first = fh.readline()
        value = json.loads(first)
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("task_id"), str)
        and isinstance(value.get("attempt"), int)
        and isinstance(value.get("task_token"), str)
        and first.endswith(b"\n")
    )
    return value if ok else None
