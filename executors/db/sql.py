"""The SQL types' shared run: read the script, split it, run it in batches on one session, report.

Batching (seed 004 `exec_options`): DML statements are grouped `trans_batch_size` to a transaction; a DDL
statement commits the open batch and then commits on its own; `sleep_ms` pauses between batches. On an
error the open batch is rolled back and nothing after the failing statement runs, so the result says
exactly what is committed. Types without transactions (ClickHouse) run statement by statement.

The whole script is checked first (`guard.check_script`): a dangerous or unsupported statement fails the
target before anything runs. A script's own `BEGIN [modes] ... COMMIT` runs as one transaction opened
with its modes (READ ONLY, ISOLATION LEVEL: the server enforces them); its `ROLLBACK`/`ABORT` rolls that
transaction back and the result says so. `check_only` reviews instead of running (`review`).
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
from executors.db.guard import BEGIN_VERBS, COMMIT_VERBS, ROLLBACK_VERBS, ScriptRefused, check_script, transaction_start
from executors.db.params import DbParams, Target
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

    def check_command(self, command: str, params: DbParams) -> None:
        """An inline script is checked whole at task creation: a refused statement is a 400, not a failed task."""
        try:
            statements = split_sql(command, self.dialect)
            check_script(statements, self.dialect, _allows_dangerous(params))
        except (SplitError, ScriptRefused) as exc:
            raise ValueError(f"command: {exc}") from None

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
        try:
            findings = check_script(statements, self.dialect, _allows_dangerous(run.params))
        except ScriptRefused as exc:
            return TargetResult(target, TaskStatus.failed, f"{where}: {exc}")
        if run.options.check_only:
            from executors.db.review import review

            return await review(self, target, run, statements, findings)
        run.log(f"{len(statements)} statements from {where} on {target.label}")
        session = await self.open_session(target, run)
        if isinstance(session, TargetResult):
            return session
        batch = _Batch(session, run, statements, self.dialect)
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

    async def open_session(self, target: Target, run: TargetRun) -> SqlSession | TargetResult:
        """A session for `target`, or the failed result saying why there is none."""
        try:
            return await blocking.call(
                lambda: self.connect(target, run),
                cancel=run.ctx.cancel_event,
                deadline=run.deadline,
                on_late_result=lambda late: late.close(False),  # a connection that came too late goes back
            )
        except Stopped as exc:
            return TargetResult(target, exc.status, f"{exc.reason} while connecting to {target.label}")
        except Exception as exc:
            return TargetResult(target, TaskStatus.failed, f"cannot connect to {target.label}: {_message(exc)}")


def _allows_dangerous(params: DbParams) -> bool:
    """A review runs nothing, so it shows dangerous statements instead of refusing them."""
    return params.exec_options.allow_dangerous or params.exec_options.check_only


class _Batch:
    """The statement loop for one target; keeps the entries, the open batch and the outcome."""

    def __init__(self, session: SqlSession, run: TargetRun, statements: list[Statement], dialect: str) -> None:
        self.session = session
        self.dialect = dialect
        self.run = run
        self.statements = statements
        self.opts = run.options
        self.entries: list[Entry] = []
        self.open: list[Entry] = []  # executed, not yet committed
        self.batches = 0
        self.dml_in_batch = 0
        self.explicit = False
        """Inside the script's own BEGIN ... COMMIT: one transaction, not cut by trans_batch_size or DDL."""
        self.started = False
        """The server transaction was opened with the script's modes: it must end even with no entries."""
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
            if stmt.kind == "ddl" and self.explicit and self.dialect != "postgres":
                self.explicit = False  # MySQL commits before DDL: the block ends here (guard allowed it)
            if stmt.kind == "ddl" and self.open and not self.explicit and not await self._commit():
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
            if self.explicit:
                continue
            if stmt.kind == "ddl":
                if not await self._commit():
                    return
            elif stmt.kind == "dml":
                self.dml_in_batch += 1
                full = self.dml_in_batch >= self.opts.trans_batch_size
                if full and (not await self._commit() or not await self._pause(stmt.index < n)):
                    return
        if self.open or self.started:
            await self._commit()

    async def _tx(self, stmt: Statement) -> bool:
        """The script's BEGIN opens one transaction (with its modes), COMMIT ends it, ROLLBACK undoes it.
        `guard.check_script` has refused every other transaction statement before anything ran."""
        if stmt.verb in COMMIT_VERBS:
            self.explicit = False
            return await self._commit()
        if stmt.verb in ROLLBACK_VERBS:
            self.explicit = False
            return await self._script_rollback(stmt)
        if stmt.verb not in BEGIN_VERBS:  # unreachable after check_script; never run it unchecked
            await self._fail(TaskStatus.failed, f"statement {stmt.index}: {stmt.verb} is not supported in a script")
            return False
        if not await self._commit():
            return False
        self.explicit = self.session.transactional
        start = transaction_start(stmt, self.dialect)
        if start is None or not self.session.transactional:
            return True
        opener = Statement(stmt.index, start, "tx", stmt.verb)
        try:
            await self._call(lambda: self.session.execute(opener, 0, False))
        except Stopped as exc:
            self.abandoned = exc.abandoned
            await self._fail(exc.status, f"statement {stmt.index} interrupted ({exc.reason})")
            return False
        except Exception as exc:
            await self._fail(TaskStatus.failed, f"statement {stmt.index} ({stmt.short()}) failed: {_message(exc)}")
            return False
        self.started = True
        self.run.log(f"[{stmt.index}/{len(self.statements)}] {stmt.short()}: transaction opened ({start})")
        return True

    async def _script_rollback(self, stmt: Statement) -> bool:
        """The script's ROLLBACK: the server undoes the block, and the entries say rolled back, not committed."""
        try:
            await self._call(self.session.rollback, grace=True)
        except Stopped:
            self.abandoned, self.status = True, TaskStatus.failed
            self.error = f"statement {stmt.index} (ROLLBACK) got no answer: the connection was dropped"
            self.open, self.started = [], False
            return False
        except Exception as exc:
            await self._fail(TaskStatus.failed, f"statement {stmt.index} (ROLLBACK) failed: {_message(exc)}")
            return False
        for e in self.open:  # a query's rows stay valid; only changes are undone
            e.rolled_back = e.stmt.kind != "query"
            e.committed = e.stmt.kind == "query"
            e.by_script = True
        if self.open:
            self.batches += 1
            first, last = self.open[0].stmt.index, self.open[-1].stmt.index
            self.run.log(f"rolled back batch {self.batches} (statements {first}-{last}) as statement {stmt.index} asks")
        self.open, self.started, self.dml_in_batch = [], False, 0
        return True

    async def _commit(self) -> bool:
        if not self.open and not self.started:
            return True
        if not self.open:  # a transaction opened with modes and nothing in it: end it
            try:
                await self._call(self.session.commit, grace=True)
            except Exception as exc:
                await self._fail(TaskStatus.failed, f"commit failed: {_message(exc)}")
                return False
            self.started = False
            return True
        self.started = False
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
        rolled = sum(e.rolled_back and not e.by_script for e in self.entries)
        undone = sum(e.rolled_back and e.by_script for e in self.entries)
        last = self.entries[-1].stmt.index if self.entries else 0
        not_run = sum(1 for s in self.statements if s.index > last and s.kind != "tx")
        parts = [f"{len(self.statements)} statements", f"{done} executed and committed"]
        if undone:
            parts.append(f"{undone} rolled back by the script's ROLLBACK")
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
