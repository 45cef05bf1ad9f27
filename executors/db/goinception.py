"""Running a mysql task through goInception (review, execute, backup), as Archery does.

goInception speaks the MySQL protocol: the whole script is sent once, wrapped in its magic header that
names the real server, and it answers one row per statement (stage, error level, affected rows, the
backup database and sequence under which its rollback statements are kept). `exec_options.check_only`
sends `--check=1`: goInception reviews the script and executes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from executors.base import Stopped
from executors.db import blocking
from executors.db.base import TargetResult, TargetRun
from executors.db.goinception_backup import backup_server, read_rollback, wanted
from executors.db.guard import ScriptRefused, check_script
from executors.db.params import Target
from executors.db.source import SourceError, read_source
from executors.db.split import SplitError, split_sql
from wire.tasks import LogLevel, TaskStatus

_LEVELS = {0: "OK", 1: "WARNING", 2: "ERROR"}
Rollback = Mapping[tuple[str, str], list[str]]


def parse_url(url: str) -> dict[str, Any]:
    """`mysql://user:password@host:4000` or `host:4000` -> pymysql connect arguments."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url if "://" in url else f"mysql://{url}")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 4000,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }


def _header(target: Target, execute: bool, backup: bool, batch: int, sleep_ms: int) -> str:
    opts = [
        f"--host={target.host}",
        f"--port={target.port}",
        f"--user={target.user or ''}",
        f"--password={target.password or ''}",
    ]
    if not execute:  # a review only: Archery's execute_check sends nothing else
        return "/*" + ";".join([*opts, "--check=1"]) + ";*/"
    opts += ["--execute=1", f"--backup={int(backup)}", f"--trans={batch}"]
    if sleep_ms:
        opts.append(f"--sleep={sleep_ms}")
    return "/*" + ";".join(opts) + ";*/"


class _Session:
    """One goInception connection running one script, and the way to stop it from another thread."""

    def __init__(self, gi: dict[str, Any]) -> None:
        self.gi = gi
        self.conn: Any = None
        self.answer: tuple[list[str], list[tuple[Any, ...]]] | None = None

    def run(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        import pymysql

        self.conn = pymysql.connect(**self.gi, charset="utf8mb4", connect_timeout=10, autocommit=True)
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql)
                self.answer = [d[0] for d in cur.description or []], list(cur.fetchall())
                return self.answer
        finally:
            self.conn.close()

    def kill(self) -> None:
        """goInception's documented KILL: `kill <id>` of our connection, sent on a second one. It stops
        after the statement it is on (writing the backup of what ran) and answers our connection with the
        rows so far. Dropping our connection instead would leave it running the script."""
        import pymysql

        conn = self.conn
        if conn is None:
            return
        try:
            other = pymysql.connect(**self.gi, charset="utf8mb4", connect_timeout=5, autocommit=True)
            try:
                with other.cursor() as cur:
                    cur.execute(f"kill {int(conn.thread_id())}")
            finally:
                other.close()
        except Exception:
            conn.close()  # the KILL did not get through: at least stop waiting on the answer
            raise

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()


async def run_goinception(url: str, target: Target, run: TargetRun) -> TargetResult:
    """Send the script to goInception and turn its per-statement rows into the task's result."""
    try:
        where, script = await read_source(run.task, run.params, run.ctx)
    except SourceError as exc:
        return TargetResult(target, TaskStatus.failed, str(exc))
    opts = run.options
    execute = not opts.check_only
    refused = _refused(script) if execute and not opts.allow_dangerous else None
    if refused:
        return TargetResult(target, TaskStatus.failed, f"{where}: {refused}")
    use = f"use `{target.database}`;\n" if target.database else ""
    sql = (
        _header(target, execute, opts.backup, opts.trans_batch_size, opts.sleep_ms)
        + f"\ninception_magic_start;\n{use}{script.rstrip().rstrip(';')};\ninception_magic_commit;"
    )
    gi = parse_url(url)
    verb = "sending" if execute else "sending for review only (check_only)"
    run.log(f"{verb} {where} to goInception at {gi['host']}:{gi['port']} for {target.label}")
    session = _Session(gi)
    started = time.perf_counter()
    try:
        columns, rows = await blocking.call(
            lambda: session.run(sql), cancel=run.ctx.cancel_event, deadline=run.deadline, interrupt=session.kill
        )
    except Stopped as exc:
        if exc.abandoned:
            session.drop()
        status = TaskStatus.canceled if exc.reason == "canceled" else TaskStatus.timeout
        error = f"{exc.reason} while goInception ran the script"
        if session.answer is None:
            return TargetResult(target, status, error)
        # goInception stopped after the statement it was on and said what it did: keep that.
        res = _result(target, run, *session.answer, time.perf_counter() - started, execute=execute)
        res.status, res.error = status, error + (f"; {res.error}" if res.error else "")
        return res
    except Exception as exc:
        return TargetResult(target, TaskStatus.failed, f"goInception at {gi['host']}:{gi['port']}: {exc}")
    took = time.perf_counter() - started
    rollback, note = await _rollback(run, _entries(columns, rows), execute and opts.backup)
    return _result(target, run, columns, rows, took, execute=execute, rollback=rollback, rollback_note=note)


def _refused(script: str) -> str | None:
    """The same dangerous-statement guard as the direct path: checked before goInception sees the script."""
    try:
        check_script(split_sql(script, "mysql"), "mysql", allow_dangerous=False)
    except ScriptRefused as exc:
        return str(exc)
    except SplitError:
        return None  # goInception parses the script itself and reports what it cannot
    return None


async def _rollback(run: TargetRun, entries: list[dict[str, Any]], backup: bool) -> tuple[Rollback | None, str]:
    """The rollback statements from goInception's backup server, when the agent config names it."""
    server = backup_server(run.ctx.config)
    pairs = wanted(entries)
    if not backup or server is None or not pairs:
        return None, ""
    try:
        found = await blocking.call(
            lambda: read_rollback(server, pairs), cancel=run.ctx.cancel_event, deadline=run.deadline
        )
    except Stopped as exc:
        return None, f"not read: {exc.reason} before the backup server answered"
    except Exception as exc:  # the script ran; a backup server we cannot read only costs the rollback text
        note = f"not read from goInception's backup server {server['host']}:{server['port']}: {exc}"
        run.log(f"rollback SQL {note}", LogLevel.warn)
        return None, note
    return found, ""


def _entries(columns: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """goInception's answer rows as entries of `data`."""
    entries: list[dict[str, Any]] = []
    for raw in rows:
        r = dict(zip([c.lower() for c in columns], raw, strict=False))
        level = int(r.get("error_level") or 0)
        message = str(r.get("error_message") or "").strip()
        message = "" if message == "None" else message  # goInception writes None as text
        entries.append(
            {
                "index": int(r.get("order_id") or len(entries) + 1),
                "sql": str(r.get("sql") or ""),
                "stage": str(r.get("stage") or ""),
                "stage_status": str(r.get("stage_status") or ""),
                "error_level": _LEVELS.get(level, str(level)),
                "affected_rows": int(r.get("affected_rows") or 0),
                "elapsed_ms": round(float(r.get("execute_time") or 0) * 1000, 3),
                "columns": None,
                "rows": None,
                "error": message if level == 2 else "",
                "warning": message if level == 1 else "",
                "backup_db": str(r.get("backup_dbname") or ""),
                "sequence": str(r.get("sequence") or "").replace("'", ""),
            }
        )
    return entries


def _result(
    target: Target,
    run: TargetRun,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    took: float,
    *,
    execute: bool = True,
    rollback: Rollback | None = None,
    rollback_note: str = "",
) -> TargetResult:
    entries = _entries(columns, rows)
    blocks: list[str] = []
    errors: list[str] = []
    for entry in entries:
        message = entry["error"] or entry["warning"]
        if entry["error"]:
            errors.append(f"statement {entry['index']}: {message}")
        run.log(
            f"[{entry['index']}/{len(rows)}] {entry['stage']} {entry['stage_status']}: affected "
            f"{entry['affected_rows']} rows",
            LogLevel.error if entry["error"] else None,
        )
        lines = [
            f"Order ID: {entry['index']}",
            f"Stage: {entry['stage']}",
            f"Status: {entry['stage_status']}",
            f"Error Level: {entry['error_level']}" + (f" ({message})" if message else ""),
            f"Affected Rows: {entry['affected_rows']}",
            f"Execute Time: {entry['elapsed_ms'] / 1000:.3f}s",
        ]
        if execute:
            lines += [f"Backup DB: {entry['backup_db']}", f"Sequence: {entry['sequence']}"]
        key = (entry["backup_db"], entry["sequence"])
        if rollback is not None and key in rollback:
            entry["rollback_sql"] = list(rollback[key])
            lines.append("Rollback SQL: " + ("\n".join(rollback[key]) or "none recorded"))
        elif rollback_note and key in wanted([entry]):
            entry["rollback_sql"], entry["rollback_note"] = [], rollback_note
            lines.append(f"Rollback SQL: {rollback_note}")
        lines.append(f"SQL: {entry['sql']}")
        blocks.append("\n".join(lines))
    what = "through goInception" if execute else "reviewed by goInception (check_only: nothing executed)"
    blocks.append(f"Summary: {len(rows)} statements {what} in {took:.3f}s")
    # Undoing several statements means undoing the newest first, as the direct mysql path says.
    script = [sql for e in reversed(entries) for sql in e.get("rollback_sql", [])]
    if script:
        blocks.append("Rollback script (newest first):\n" + "\n".join(script))
    status = TaskStatus.failed if errors else TaskStatus.success
    return TargetResult(target, status, "; ".join(errors), entries, "\n\n".join(blocks) + "\n")
