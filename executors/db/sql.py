"""The SQL types' shared run: read the script, split it, run it in batches on one session, report.

Batching (seed 004 `exec_options`): DML statements are grouped `trans_batch_size` to a transaction; a DDL
statement commits the open batch and then commits on its own; `sleep_ms` pauses between batches. On an
error the open batch is rolled back and nothing after the failing statement runs, so the result says
exactly what is committed. Types without transactions (ClickHouse) run statement by statement.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from executors.base import Stopped, until_stopped
from executors.db import blocking
from executors.db.base import DbExecutor, TargetResult, TargetRun
from executors.db.params import Target
from executors.db.report import Entry, render
from executors.db.source import SourceError, read_source
from executors.db.split import SplitError, Statement, split_sql
from wire.tasks import LogLevel, TaskStatus

ROLLBACK_GRACE_SECONDS = 30.0
"""Time a rollback or commit gets after the task's deadline has passed or it was canceled."""


@dataclass
class StatementOutput:
    """What a session reports for one statement."""

    affected_rows: int = 0
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    truncated: bool = False
    rollback_sql: list[str] = field(default_factory=list)
    rollback_note: str = ""
    """Why there is no rollback SQL (not reversible, backup off), shown instead of it."""


class SqlSession(ABC):
    """One connection checked out for one target; every method but `interrupt` runs in a worker thread."""

    transactional: ClassVar[bool] = True

    @abstractmethod
    def execute(self, stmt: Statement, max_rows: int, backup: bool) -> StatementOutput:
        """Run one statement (inside the open transaction when transactional)."""

    def commit(self) -> None:
        """Commit the open transaction (no-op without transactions)."""
        return None

    def rollback(self) -> None:
        """Roll the open transaction back (no-op without transactions)."""
        return None

    @abstractmethod
    def interrupt(self) -> None:
        """Stop the running statement on the server; called from another thread."""

    @abstractmethod
    def close(self, reusable: bool) -> None:
        """Give the connection back to its pool, or discard it when it may be in a bad state."""


class SqlExecutor(DbExecutor):
    """Base of mysql, doris, postgres and clickhouse."""

    dialect: ClassVar[str]
    """The sqlglot dialect that splits this type's scripts: a type's own name is not one (a new type
    speaking MySQL's protocol, say, names `mysql` here)."""

    def driver_modules(self, targets: list[Target]) -> list[str]:
        # sqlglot loads a dialect's lexer on first use: part of the agent's warm-up, not of the deadline.
        return [f"sqlglot.dialects.{self.dialect}"]

    @abstractmethod
    def connect(self, target: Target, run: TargetRun) -> SqlSession:
        """Check out a session for `target` (blocking; raise with a clear message when it cannot)."""

    async def run_target(self, target: Target, run: TargetRun) -> TargetResult:
        try:
            where, script = await read_source(run.task, run.params, run.ctx)
        except SourceError as exc:
            return TargetResult(target, TaskStatus.failed, str(exc))
        try:
            statements = split_sql(script, self.dialect)
        except SplitError as exc:
            return TargetResult(target, TaskStatus.failed, f"{where}: {exc}")
        if not statements:
            return TargetResult(target, TaskStatus.failed, f"{where}: no SQL statements found")
        run.log(f"{len(statements)} statements from {where} on {target.label}")
        try:
            session = await blocking.call(
                lambda: self.connect(target, run),
                cancel=run.ctx.cancel_event,
                deadline=run.deadline,
                on_late_result=lambda late: late.close(False),  # a connection that came too late goes back
            )
        except Stopped as exc:
            return TargetResult(target, exc.status, f"{exc.reason} while connecting to {target.label}")
        except Exception as exc:
            return TargetResult(target, TaskStatus.failed, f"cannot connect to {target.label}: {_message(exc)}")
        batch = _Batch(session, run, statements)
        reusable = False
        try:
            await batch.run_all()
            # A failed or interrupted session may sit mid-transaction or still be busy: never reuse it.
            reusable = batch.status == TaskStatus.success and not batch.abandoned
        finally:
            await asyncio.to_thread(session.close, reusable)
        text = render(batch.entries, len(statements), batch.summary(), show_rollback=self.shows_rollback)
        return TargetResult(target, batch.status, batch.error, [e.data() for e in batch.entries], text)

    shows_rollback: ClassVar[bool] = True


class _Batch:
    """The statement loop for one target; keeps the entries, the open batch and the outcome."""

    def __init__(self, session: SqlSession, run: TargetRun, statements: list[Statement]) -> None:
        self.session = session
        self.run = run
        self.statements = statements
        self.opts = run.options
        self.entries: list[Entry] = []
        self.open: list[Entry] = []  # executed, not yet committed
        self.batches = 0
        self.dml_in_batch = 0
        self.abandoned = False
        """The server never confirmed an interrupt, commit or rollback: the connection is still busy."""
        self.status = TaskStatus.success
        self.error = ""

    async def run_all(self) -> None:
        n = len(self.statements)
        for stmt in self.statements:
            if stmt.kind == "tx":
                if not await self._tx(stmt):
                    return
                continue
            if stmt.kind == "ddl" and self.open and not await self._commit():
                return
            entry = Entry(stmt, batch=self.batches + 1)
            self.entries.append(entry)
            started = time.perf_counter()
            try:
                out = await self._call(lambda s=stmt: self.session.execute(s, self.opts.max_rows, self.opts.backup))
            except Stopped as exc:
                entry.finish_failed(f"interrupted: {exc.reason}", started, interrupted=True)
                self.abandoned = exc.abandoned
                await self._fail(exc.status, f"statement {stmt.index} interrupted ({exc.reason})")
                return
            except Exception as exc:
                entry.finish_failed(_message(exc), started)
                self.run.log(f"[{stmt.index}/{n}] {stmt.short()}: failed: {entry.error}", LogLevel.error)
                await self._fail(TaskStatus.failed, f"statement {stmt.index} failed: {entry.error}")
                return
            entry.finish(out, started)
            self.run.log(f"[{stmt.index}/{n}] {stmt.short()}: {entry.progress()}")
            if not self.session.transactional:
                entry.committed = True
                continue
            self.open.append(entry)
            if stmt.kind == "ddl":
                if not await self._commit():
                    return
            elif stmt.kind == "dml":
                self.dml_in_batch += 1
                full = self.dml_in_batch >= self.opts.trans_batch_size
                if full and (not await self._commit() or not await self._pause(stmt.index < n)):
                    return
        if self.open:
            await self._commit()

    async def _tx(self, stmt: Statement) -> bool:
        """The script's own BEGIN/COMMIT mark batch boundaries; ROLLBACK and savepoints are refused."""
        if stmt.verb in {"BEGIN", "START TRANSACTION", "COMMIT", "END"}:
            return not self.open or await self._commit()
        entry = Entry(stmt, batch=self.batches + 1)
        self.entries.append(entry)
        entry.finish_failed(f"{stmt.verb} is not supported in a script: transactions follow trans_batch_size", None)
        await self._fail(TaskStatus.failed, f"statement {stmt.index}: {entry.error}")
        return False

    async def _commit(self) -> bool:
        if not self.open:
            return True
        try:
            await self._call(self.session.commit, grace=True)
        except Stopped:
            # The commit may or may not have happened: say so rather than guess, and drop the connection.
            self.abandoned = True
            self.status = TaskStatus.failed
            self.error = f"commit of batch {self.batches + 1} got no answer: its outcome is unknown, check the server"
            self.open = []
            return False
        except Exception as exc:
            await self._fail(TaskStatus.failed, f"commit of batch {self.batches + 1} failed: {_message(exc)}")
            return False
        self.batches += 1
        self.dml_in_batch = 0
        for e in self.open:
            e.committed = True
        if len(self.open) > 1 or self.open[0].stmt.kind != "ddl":
            first, last = self.open[0].stmt.index, self.open[-1].stmt.index
            self.run.log(f"committed batch {self.batches} (statements {first}-{last})")
        self.open = []
        return True

    async def _fail(self, status: TaskStatus, error: str) -> None:
        self.status, self.error = status, error
        if self.abandoned:
            # The connection is still busy with the interrupted statement: a rollback would queue behind
            # it (or hang). Dropping the connection makes the server roll the batch back.
            self.error += (
                "; the server did not confirm the interrupt: the connection was dropped, "
                "which rolls back the open batch"
            )
            self.open = []
            return
        if self.session.transactional:
            try:
                await self._call(self.session.rollback, grace=True)
                for e in self.open:  # a query's rows stay valid; only changes are undone
                    e.rolled_back = e.stmt.kind != "query"
                    e.committed = e.stmt.kind == "query"
                if self.open or self.entries:
                    # The range ends at the failing statement, which was part of the batch too.
                    first = self.open[0].stmt.index if self.open else self.entries[-1].stmt.index
                    last = self.entries[-1].stmt.index if self.entries else first
                    self.run.log(f"rolled back batch {self.batches + 1} (statements {first}-{last})", LogLevel.warn)
            except Stopped:
                self.abandoned = True
                self.error += "; the rollback got no answer: the connection was dropped"
            except Exception as exc:
                self.error += f"; rollback failed: {_message(exc)}"
        self.open = []

    async def _pause(self, more: bool) -> bool:
        """Sleep `sleep_ms` between batches; a cancel or the deadline ends the sleep (and the run)."""
        if not more or not self.opts.sleep_ms:
            return True
        try:
            await until_stopped(self.run, asyncio.sleep(self.opts.sleep_ms / 1000))
        except Stopped as stop:
            self.status, self.error = stop.status, f"{stop.reason} between batches"
            return False
        return True

    async def _call(self, fn: Any, grace: bool = False) -> Any:
        if grace:  # finishing a transaction must happen even after a cancel or at the deadline
            loop = asyncio.get_running_loop()
            return await blocking.call(fn, cancel=asyncio.Event(), deadline=loop.time() + ROLLBACK_GRACE_SECONDS)
        return await blocking.call(
            fn, cancel=self.run.ctx.cancel_event, deadline=self.run.deadline, interrupt=self.session.interrupt
        )

    def summary(self) -> str:
        done = sum(e.committed for e in self.entries)
        rolled = sum(e.rolled_back for e in self.entries)
        last = self.entries[-1].stmt.index if self.entries else 0
        not_run = sum(1 for s in self.statements if s.index > last and s.kind != "tx")
        parts = [f"{len(self.statements)} statements", f"{done} executed and committed"]
        if rolled:
            parts.append(f"{rolled} rolled back")
        if self.error:
            parts.append(self.error)
        if not_run > 0 and self.status != TaskStatus.success:
            parts.append(f"{not_run} not run")
        return "; ".join(parts)


def _message(exc: BaseException) -> str:
    """A driver error as one line; pymysql's (code, message) tuples become `code: message`."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) == 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
