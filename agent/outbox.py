"""The agent's outbox on disk (`<data_dir>/outbox/`): for each (task, attempt) one journal of its log
lines and process groups, ended by its result; removed once the cloud has acknowledged the result.

Durability: every journal record is flushed to the kernel as it is written, except log lines, which are
flushed before any batch or result carrying them leaves the agent (so a line the cloud has seen is
always in the kernel); nothing is fsynced. The result is the journal's last record, written in one
call: a crash in the middle of it leaves a line without its newline, which reads as no result at all
(one file per attempt instead of a journal plus a result renamed into place saved a third of the
outbox's cost per task). The fault model is a crash of the agent process (SIGKILL, OOM kill, a bug),
after which the kernel still holds everything flushed; a crash of the machine itself may lose the last
records, which is the price of a fast hot path.
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
LEGACY_RESULT_SUFFIX = ".result.json"
"""Where agents before the result record kept an attempt's result: still read, so that an agent upgraded
while results wait for the cloud delivers them."""
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
        header = {"task_id": task.id, "attempt": task.attempt, "task_token": task.task_token}
        self._write(orjson.dumps(header).decode())

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
        self._write(orjson.dumps({"pid": rec.pid, "start": rec.start, "boot": rec.boot}).decode())

    def finish(self, report: TaskReport) -> bool:
        """Append the result (without its lines, which are journaled already) as the last record and close;
        whether it is stored (False when the journal failed, now or earlier: it then lives in memory only)."""
        stored = self._fh is not None
        self._write(result_record(report))
        stored = stored and self._fh is not None  # _write closes the journal when the disk fails
        self.close()
        return stored

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


def result_record(report: TaskReport) -> str:
    """The journal record of a result: `{"result": <the report without its lines>}`."""
    return '{"result":' + report.model_dump_json(exclude={"lines"}) + "}"


@dataclass
class Contents:
    """What a journal holds: log lines (contiguous from seq 1), process groups, and the result if any."""

    lines: list[LogLine]
    processes: list[ProcessRecord]
    valid_bytes: int
    """Length of the part that parsed; past it lies a record cut short by a crash, if anything."""
    result: TaskReport | None = None
    """The attempt's result, when it got that far."""


@dataclass
class Entry:
    """One attempt in the outbox: `<stem>.jsonl` (header, lines, processes, then the result)."""

    task_id: str
    attempt: int
    task_token: str
    journal_path: Path
    legacy_result: bool = False
    """An older agent left the result beside the journal, in `<stem>.result.json`."""

    @property
    def legacy_result_path(self) -> Path:
        name = self.journal_path.name.removesuffix(JOURNAL_SUFFIX) + LEGACY_RESULT_SUFFIX
        return self.journal_path.with_name(name)

    def read(self) -> Contents:
        """The journal's lines, processes and result, up to the first record that does not parse."""
        raw = self.journal_path.read_bytes()
        contents = Contents([], [], raw.index(b"\n") + 1 if b"\n" in raw else 0)  # Outbox.entries checked the header
        lines = contents.lines
        records = raw[contents.valid_bytes :].split(b"\n")[:-1]  # the last piece has no newline: unfinished
        for n, record in enumerate(records):
            try:
                value = json.loads(record)
                if isinstance(value, list):
                    seq, stream, level, message = value
                    if seq != len(lines) + 1:
                        raise ValueError(f"seq {seq} out of order")
                    for i, text in enumerate(message if isinstance(message, list) else [message]):
                        lines.append(LogLine(seq=seq + i, stream=stream, level=level, message=text))
                elif "result" in value:
                    contents.result = TaskReport.model_validate(value["result"])
                else:
                    pid, start, boot = int(value["pid"]), value["start"], value["boot"]
                    contents.processes.append(ProcessRecord(pid=pid, start=start, boot=boot))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("%s: outbox journal cut at a bad record (%s)", self.task_id, exc)
                if n < len(records) - 1:  # a damaged record mid-journal: the result, written last, still counts
                    contents.result = self._result_of(records[-1])
                break
            contents.valid_bytes += len(record) + 1
        if contents.result is None and self.legacy_result:
            contents.result = self._legacy()
        return contents

    def _result_of(self, record: bytes) -> TaskReport | None:
        """The result in `record`, the journal's last whole record, or None when it holds none."""
        try:
            value = json.loads(record)
            return TaskReport.model_validate(value["result"]) if isinstance(value, dict) else None
        except (ValueError, TypeError, KeyError):
            return None

    def _legacy(self) -> TaskReport | None:
        try:
            return TaskReport.model_validate_json(self.legacy_result_path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:  # it was renamed into place whole; say so if it is not
            log.error("%s: unreadable result in the outbox (%s); treating the attempt as unfinished", self.task_id, exc)
            return None

    def reopen(self, valid_bytes: int) -> Journal:
        """Append after the part that parsed, dropping a record a crash cut short."""
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND)
        os.ftruncate(fd, valid_bytes)
        return Journal(open(fd, "a", encoding="utf-8"), self.task_id)

    def remove(self) -> None:
        """The cloud has the result (or can never take it): forget the attempt. An older agent's result
        first, so a crash in between leaves an unfinished attempt whose late `agent lost` report the cloud
        refuses."""
        if self.legacy_result:
            self.legacy_result_path.unlink(missing_ok=True)
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
            fh: TextIO | None = _create(path)  # truncated: a fresh journal never carries an old result
        except OSError as exc:
            log.error("%s: cannot create its outbox journal (%s); it runs without one", task.id, exc)
            fh = None
        journal = Journal(fh, task.id)
        journal.header(task)
        return entry, journal

    def entries(self) -> list[Entry]:
        """The attempts left here, oldest first. What cannot be one (a journal a crash cut before its
        header, an older agent's result without its journal or its temporary file) is removed: nobody
        could report it."""
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
        journals = {entry.legacy_result_path: entry for entry in found}
        for path in self.root.glob("*" + LEGACY_RESULT_SUFFIX):
            if path in journals:
                journals[path].legacy_result = True
            else:
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
