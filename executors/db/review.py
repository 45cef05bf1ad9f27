"""`exec_options.check_only` for the SQL types: review a script without executing any of it.

Each statement gets its kind, verb, warnings (the dangerous ones `guard` found) and, where the server can
tell, an estimate of the rows it touches or returns: PostgreSQL's `EXPLAIN (FORMAT JSON)` plan rows,
MySQL/MariaDB's `EXPLAIN` rows. Only EXPLAIN without ANALYZE is sent, which plans and never executes;
the session's transaction is rolled back after each one all the same. ClickHouse 18.16 has no EXPLAIN.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import TYPE_CHECKING, Any

from executors.base import Stopped
from executors.db import blocking
from executors.db.base import TargetResult, TargetRun
from executors.db.guard import Finding
from executors.db.params import Target
from executors.db.split import Statement
from wire.tasks import TaskStatus

if TYPE_CHECKING:
    from executors.db.sql import SqlExecutor, SqlSession

ESTIMATED = {"postgres", "mysql", "doris"}
"""Dialects whose servers answer EXPLAIN; clickhouse (18.16 here) has none."""
_EXPLAINABLE = {"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "VALUES", "TABLE"}
NOT_AVAILABLE = "estimate not available"
_RUNS_DERIVED = {"mysql", "doris"}
"""MySQL/MariaDB's EXPLAIN executes a derived table or CTE it materializes (with any function it calls):
a statement holding one is not explained, so a review runs nothing."""
_DERIVED_NOTE = "not explained: MySQL/MariaDB's EXPLAIN would run its derived tables or WITH queries"


def _materializes(sql: str, dialect: str) -> bool:
    """Whether the statement holds a WITH or a subquery in FROM/JOIN (or cannot be parsed to tell)."""
    import sqlglot

    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except sqlglot.errors.SqlglotError:
        return True
    if tree is None or isinstance(tree, sqlglot.exp.Command) or tree.find(sqlglot.exp.With) is not None:
        return True
    return any(
        isinstance(sub.parent, (sqlglot.exp.From, sqlglot.exp.Join)) for sub in tree.find_all(sqlglot.exp.Subquery)
    )


async def review(
    executor: SqlExecutor, target: Target, run: TargetRun, statements: list[Statement], findings: list[Finding]
) -> TargetResult:
    """The review of `statements` on `target`: one entry per statement, nothing executed."""
    warnings = {f.index: f"dangerous: {f.reason} (needs exec_options.allow_dangerous)" for f in findings}
    entries = [_entry(s, warnings.get(s.index)) for s in statements]
    if executor.dialect in _RUNS_DERIVED:
        for s, e in zip(statements, entries, strict=True):
            if e["estimate_note"] == "" and _materializes(s.sql, executor.dialect):
                e["estimate_note"] = f"{NOT_AVAILABLE} ({_DERIVED_NOTE})"
    run.log(f"reviewing {len(statements)} statements for {target.label} (check_only: nothing is executed)")
    if executor.dialect in ESTIMATED and any(e["estimate_note"] == "" for e in entries):
        session = await executor.open_session(target, run)
        if isinstance(session, TargetResult):
            return session
        stopped = await _estimate_all(session, executor.dialect, run, statements, entries)
        if stopped is not None:
            return TargetResult(target, stopped.status, f"{stopped.reason} during the review", entries, _text(entries))
    else:
        for e in entries:
            e["estimate_note"] = e["estimate_note"] or f"{NOT_AVAILABLE} (no EXPLAIN on {executor.type})"
    status_line = f"{len(findings)} dangerous" if findings else "no dangerous statements"
    run.log(f"review done: {len(statements)} statements, {status_line}")
    return TargetResult(target, TaskStatus.success, "", entries, _text(entries))


def _entry(s: Statement, warning: str | None) -> dict[str, Any]:
    explainable = s.kind in ("dml", "query") and s.verb in _EXPLAINABLE
    return {
        "index": s.index,
        "sql": s.sql,
        "kind": s.kind,
        "verb": s.verb,
        "stage": "CHECKED",
        "warnings": [warning] if warning else [],
        "estimated_rows": None,
        "estimate_note": "" if explainable else "not applicable",
    }


async def _estimate_all(
    session: SqlSession, dialect: str, run: TargetRun, statements: list[Statement], entries: list[dict[str, Any]]
) -> Stopped | None:
    reusable = False
    try:
        for s, e in zip(statements, entries, strict=True):
            if e["estimate_note"]:
                continue
            try:
                rows, note = await blocking.call(
                    partial(_explain, session, dialect, s),
                    cancel=run.ctx.cancel_event,
                    deadline=run.deadline,
                    interrupt=session.interrupt,
                )
            except Stopped as exc:
                return exc
            e["estimated_rows"], e["estimate_note"] = rows, note
        reusable = True
        return None
    finally:
        await asyncio.to_thread(session.close, reusable)


def _explain(session: SqlSession, dialect: str, s: Statement) -> tuple[int | None, str]:
    """(estimated rows, note) for one statement; an EXPLAIN the server refuses gives its reason."""
    sql = f"EXPLAIN (FORMAT JSON) {s.sql}" if dialect == "postgres" else f"EXPLAIN {s.sql}"
    try:
        out = session.execute(Statement(s.index, sql, "query", "EXPLAIN"), 1000, False)
    except Exception as exc:
        reason = " ".join(str(exc).split())
        return None, f"{NOT_AVAILABLE}: {reason if len(reason) <= 300 else reason[:300] + ' ...'}"
    finally:
        session.rollback()  # a failed EXPLAIN aborts a PostgreSQL transaction; nothing else is in it
    rows = _pg_rows(out.rows) if dialect == "postgres" else _mysql_rows(out.columns, out.rows)
    return (rows, "") if rows is not None else (None, f"{NOT_AVAILABLE} (the plan gives no row count)")


def _pg_rows(rows: list[list[Any]] | None) -> int | None:
    """The plan's row estimate; for UPDATE/DELETE/INSERT the ModifyTable node's input says what it touches."""
    if not rows or not rows[0]:
        return None
    doc = rows[0][0]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    plan = doc[0]["Plan"]
    if plan.get("Node Type") == "ModifyTable" and plan.get("Plans"):
        plan = plan["Plans"][0]
    value = plan.get("Plan Rows")
    return int(value) if value is not None else None


def _mysql_rows(columns: list[str] | None, rows: list[list[Any]] | None) -> int | None:
    """The largest `rows` of the EXPLAIN lines (the table the statement scans most of)."""
    if not columns or rows is None or "rows" not in [c.lower() for c in columns]:
        return None
    i = [c.lower() for c in columns].index("rows")
    values = [int(r[i]) for r in rows if r[i] is not None]
    return max(values) if values else None


def _text(entries: list[dict[str, Any]]) -> str:
    blocks = []
    for e in entries:
        est = str(e["estimated_rows"]) if e["estimated_rows"] is not None else e["estimate_note"]
        lines = [
            f"Order ID: {e['index']}",
            "Stage: CHECKED",
            "Status: Checked, Not Executed",
            f"Kind: {e['kind']} ({e['verb']})" if e["verb"] else f"Kind: {e['kind']}",
            f"Estimated Rows: {est}",
        ]
        lines += [f"Warning: {w}" for w in e["warnings"]]
        lines.append(f"SQL: {e['sql'] if len(e['sql']) <= 2000 else e['sql'][:2000] + ' ...'}")
        blocks.append("\n".join(lines))
    dangerous = sum(bool(e["warnings"]) for e in entries)
    blocks.append(f"Summary: {len(entries)} statements checked, none executed (check_only); {dangerous} dangerous")
    return "\n\n".join(blocks) + "\n"
