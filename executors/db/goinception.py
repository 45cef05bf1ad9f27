"""Running a mysql task through goInception (review, execute, backup), as Archery does.

goInception speaks the MySQL protocol: the whole script is sent once, wrapped in its magic header that
names the real server, and it answers one row per statement (stage, error level, affected rows, the
backup database and sequence under which its rollback statements are kept).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote, urlsplit

from executors.db import blocking
from executors.db.base import TargetResult, TargetRun
from executors.db.params import Target
from executors.db.source import SourceError, read_source
from wire.tasks import LogLevel, TaskStatus

_LEVELS = {0: "OK", 1: "WARNING", 2: "ERROR"}


def parse_url(url: str) -> dict[str, Any]:
    """`mysql://user:password@host:4000` or `host:4000` -> pymysql connect arguments."""
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
        "--execute=1" if execute else "--check=1",
        f"--backup={int(backup)}",
        f"--trans={batch}",
    ]
    if sleep_ms:
        opts.append(f"--sleep={sleep_ms}")
    return "/*" + ";".join(opts) + ";*/"


async def run_goinception(url: str, target: Target, run: TargetRun) -> TargetResult:
    """Send the script to goInception and turn its per-statement rows into the task's result."""
    try:
        where, script = await read_source(run.task, run.params, run.ctx)
    except SourceError as exc:
        return TargetResult(target, TaskStatus.failed, str(exc))
    opts = run.options
    use = f"use `{target.database}`;\n" if target.database else ""
    sql = (
        _header(target, True, opts.backup, opts.trans_batch_size, opts.sleep_ms)
        + f"\ninception_magic_start;\n{use}{script.rstrip().rstrip(';')};\ninception_magic_commit;"
    )
    gi = parse_url(url)
    run.log(f"sending {where} to goInception at {gi['host']}:{gi['port']} for {target.label}")
    state: dict[str, Any] = {}

    def go() -> tuple[list[str], list[tuple[Any, ...]]]:
        import pymysql

        conn = pymysql.connect(**gi, charset="utf8mb4", connect_timeout=10, autocommit=True)
        state["conn"] = conn
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return [d[0] for d in cur.description or []], list(cur.fetchall())
        finally:
            conn.close()

    def stop() -> None:  # goInception runs the statements itself: dropping our connection stops it
        conn = state.get("conn")
        if conn is not None:
            conn.close()

    started = time.perf_counter()
    try:
        columns, rows = await blocking.call(go, cancel=run.ctx.cancel_event, deadline=run.deadline, interrupt=stop)
    except blocking.Stopped as exc:
        status = TaskStatus.canceled if exc.reason == "canceled" else TaskStatus.timeout
        return TargetResult(target, status, f"{exc.reason} while goInception ran the script")
    except Exception as exc:
        return TargetResult(target, TaskStatus.failed, f"goInception at {gi['host']}:{gi['port']}: {exc}")
    return _result(target, run, columns, rows, time.perf_counter() - started)


def _result(
    target: Target, run: TargetRun, columns: list[str], rows: list[tuple[Any, ...]], took: float
) -> TargetResult:
    entries: list[dict[str, Any]] = []
    blocks: list[str] = []
    errors: list[str] = []
    for raw in rows:
        r = dict(zip([c.lower() for c in columns], raw, strict=False))
        level = int(r.get("error_level") or 0)
        message = str(r.get("error_message") or "").strip()
        entry = {
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
            "sequence": str(r.get("sequence") or ""),
        }
        entries.append(entry)
        if level == 2:
            errors.append(f"statement {entry['index']}: {message}")
        run.log(
            f"[{entry['index']}/{len(rows)}] {entry['stage']} {entry['stage_status']}: affected "
            f"{entry['affected_rows']} rows",
            LogLevel.error if level == 2 else None,
        )
        blocks.append(
            "\n".join(
                [
                    f"Order ID: {entry['index']}",
                    f"Stage: {entry['stage']}",
                    f"Status: {entry['stage_status']}",
                    f"Error Level: {entry['error_level']}" + (f" ({message})" if message else ""),
                    f"Affected Rows: {entry['affected_rows']}",
                    f"Execute Time: {float(r.get('execute_time') or 0):.3f}s",
                    f"Backup DB: {entry['backup_db']}",
                    f"Sequence: {entry['sequence']}",
                    f"SQL: {entry['sql']}",
                ]
            )
        )
    blocks.append(f"Summary: {len(rows)} statements through goInception in {took:.3f}s")
    status = TaskStatus.failed if errors else TaskStatus.success
    return TargetResult(target, status, "; ".join(errors), entries, "\n\n".join(blocks) + "\n")
