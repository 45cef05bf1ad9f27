"""One statement's record (`data` entry) and the result text in seed 004's `Key: value` style."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from executors.db.split import Statement

if TYPE_CHECKING:
    from executors.db.sql import StatementOutput

MAX_SQL_IN_TEXT = 2000
"""A statement longer than this is cut in the result text (the log and `data` keep it whole)."""


_ROLLED_BY_SCRIPT = "Rolled Back (the script's ROLLBACK)"


@dataclass
class Entry:
    """How one statement went."""

    stmt: Statement
    batch: int
    affected_rows: int = 0
    elapsed_ms: float = 0.0
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    truncated: bool = False
    error: str = ""
    interrupted: bool = False
    committed: bool = False
    rolled_back: bool = False
    by_script: bool = False
    """Rolled back by the script's own ROLLBACK/ABORT (the task still succeeds), not by a failure."""
    rollback_sql: list[str] = field(default_factory=list)
    rollback_note: str = ""

    def finish(self, out: StatementOutput, started: float) -> None:
        self.elapsed_ms = (time.perf_counter() - started) * 1000
        self.affected_rows = out.affected_rows
        self.columns = out.columns
        self.rows = [[jsonable(v) for v in row] for row in out.rows] if out.rows is not None else None
        self.truncated = out.truncated
        self.rollback_sql = out.rollback_sql
        self.rollback_note = out.rollback_note

    def finish_failed(self, error: str, started: float | None, interrupted: bool = False) -> None:
        self.elapsed_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        self.error = error
        self.interrupted = interrupted

    @property
    def stage(self) -> str:
        if self.error:
            return "INTERRUPTED" if self.interrupted else "FAILED"
        if self.rolled_back:
            return "ROLLED_BACK"
        return "EXECUTED" if self.committed else "EXECUTED_UNCOMMITTED"

    @property
    def status_text(self) -> str:
        return {
            "FAILED": "Execute Failed",
            "INTERRUPTED": "Execute Interrupted",
            "ROLLED_BACK": _ROLLED_BY_SCRIPT if self.by_script else "Rolled Back (its batch failed)",
            "EXECUTED": "Execute Successfully",
            "EXECUTED_UNCOMMITTED": "Executed, Not Committed",
        }[self.stage]

    def progress(self) -> str:
        """The log line's tail: `affected 42 rows in 12 ms` or `returned 3 rows in 2 ms`."""
        ms = f"{self.elapsed_ms:.0f} ms"
        if self.rows is not None:
            more = " (cut at max_rows)" if self.truncated else ""
            return f"returned {len(self.rows)} rows{more} in {ms}"
        return f"affected {self.affected_rows} rows in {ms}"

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.stmt.index,
            "sql": self.stmt.sql,
            "kind": self.stmt.kind,
            "stage": self.stage,
            "batch": self.batch,
            "affected_rows": self.affected_rows,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "columns": self.columns,
            "rows": self.rows,
            "error": self.error,
        }
        if self.truncated:
            out["truncated"] = True
        if self.by_script:
            out["rolled_back_by_script"] = True
        if self.rollback_sql or self.rollback_note:
            out["rollback_sql"] = self.rollback_sql
            out["rollback_note"] = self.rollback_note
        return out


def render(entries: list[Entry], total: int, summary: str, *, show_rollback: bool) -> str:
    """The `result` text: one block per statement that ran, then a summary line."""
    blocks = []
    for e in entries:
        lines = [
            f"Order ID: {e.stmt.index}",
            f"Stage: {e.stage}",
            f"Status: {e.status_text}",
            f"Affected Rows: {e.affected_rows}",
            f"Execute Time: {e.elapsed_ms / 1000:.3f}s",
        ]
        if e.rows is not None:
            cut = f" (first {len(e.rows)}; cut at max_rows)" if e.truncated else ""
            lines.append(f"Rows: {len(e.rows)}{cut}")
        if e.error:
            lines.append(f"Error: {e.error}")
        if show_rollback and (e.rollback_sql or e.rollback_note) and not e.rolled_back and not e.error:
            lines.append("Rollback SQL: " + ("\n".join(e.rollback_sql) if e.rollback_sql else e.rollback_note))
        sql = e.stmt.sql if len(e.stmt.sql) <= MAX_SQL_IN_TEXT else e.stmt.sql[:MAX_SQL_IN_TEXT] + " ..."
        lines.append(f"SQL: {sql}")
        blocks.append("\n".join(lines))
    blocks.append(f"Summary: {summary}")
    if show_rollback:
        # Undoing several statements means undoing the newest first (an UPDATE then a DELETE of the same
        # row is restored by re-inserting, then un-updating).
        script = [sql for e in reversed(entries) if e.committed and not e.error for sql in e.rollback_sql]
        if script:
            blocks.append("Rollback script (newest first):\n" + "\n".join(script))
    return "\n\n".join(blocks) + "\n"


def jsonable(value: Any) -> Any:
    """A column value as JSON can carry it: exact numbers as text, times as ISO 8601, bytes as text or hex."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)
