"""Fill a Tiangong database with many finished tasks, fast, for bench/bigdb.py.

The schema is the real one: the cloud's own migrations create it (cloud.db.engine.migrate), and the rows
are written to every column of the model's table (cloud.db.models), so a new NOT NULL column without a
value here stops the fill rather than writing rows the cloud would not. Rows go in through the driver in
bulk (executemany on SQLite, COPY on PostgreSQL): the ORM would take many minutes for a million rows.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from cloud.db.engine import make_engine, migrate
from cloud.db.models import AGENTS, TASK_LOGS, TASKS

FLEET = 100
"""Agents the finished tasks are spread over: fleet-000 ... fleet-099."""
TYPES = (("shell", 50), ("execute", 20), ("python", 15), ("api", 10), ("ping", 5))
STATUSES = (("success", 85), ("failed", 10), ("timeout", 3), ("canceled", 2))
LOGGED_SHARE = 0.1
"""The share of tasks that keep log lines (LINES_PER_LOGGED each)."""
LINES_PER_LOGGED = 3
BATCH = 20_000


def fleet_agent(i: int) -> str:
    return f"fleet-{i:03d}"


def _weighted(pairs: tuple[tuple[str, int], ...], n: int, rng: random.Random) -> list[str]:
    names, weights = zip(*pairs, strict=True)
    return rng.choices(names, weights=weights, k=n)


def task_rows(n: int, days: float, seed: int = 18) -> Iterator[dict[str, Any]]:
    """`n` finished tasks, ids 1..n, created evenly over the last `days` days (ids grow with time)."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    start = now - timedelta(days=days)
    step = timedelta(days=days) / max(n, 1)
    for first in range(1, n + 1, BATCH):
        count = min(BATCH, n - first + 1)
        types, statuses = _weighted(TYPES, count, rng), _weighted(STATUSES, count, rng)
        for k in range(count):
            task_id = first + k
            created = start + step * task_id
            status = statuses[k]
            yield {
                "id": task_id,
                "agent_id": fleet_agent(rng.randrange(FLEET)),
                "type": types[k],
                "status": status,
                "command": f"deploy --build {task_id}",
                "params": "{}",
                "env": "{}",
                "file_id": "",
                "exec_timeout": 1800,
                "result": "ok\n" if status == "success" else "",
                "data": None,
                "exit_code": 0 if status == "success" else 1,
                "error": "" if status == "success" else f"{status} (exit code 1)",
                "attempts": 1,
                "max_retries": 0,
                "retries": 0,
                "retry_backoff": 5.0,
                "retry_on": "lost",
                "next_retry_at": None,
                "last_error": "",
                "expires_in": 3600,
                "expires_at": None,
                "request_id": None,
                "request_fingerprint": None,
                "cron_source": None,
                "task_token": None,
                "claimed_by": "127.0.0.1",
                "lease_expires_at": None,
                "next_seq": LINES_PER_LOGGED + 1,
                "log_bytes": 0,
                "cancel_requested": False,
                "started_at": created + timedelta(milliseconds=5),
                "finished_at": created + timedelta(milliseconds=50),
                "created_at": created,
                "updated_at": created + timedelta(milliseconds=50),
            }


def _columns(table: Any, sample: dict[str, Any]) -> list[str]:
    """Every column of `table`, checked against the row we write: a column the model has and this fill
    does not know must be added here, or the rows would not be the cloud's."""
    names = [c.name for c in table.columns]
    missing = [c.name for c in table.columns if c.name not in sample and not c.nullable]
    if missing:
        raise SystemExit(f"bench/bigdb_fill.py: no value for the new column(s) {missing} of {table.name}")
    return names


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):  # SQLAlchemy's SQLite DATETIME storage format
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def _log_rows(task_ids: list[int], start_id: int) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC).replace(tzinfo=None)
    log_id = start_id
    for task_id in task_ids:
        for seq in range(1, LINES_PER_LOGGED + 1):
            yield {
                "id": log_id,
                "task_id": task_id,
                "attempt": 1,
                "seq": seq,
                "stream": "stdout",
                "level": "info",
                "message": f"step {seq} of build {task_id}",
                "timestamp": now,
                "lines": 1,  # a row per line, as an agent's lines printed apart are stored
            }
            log_id += 1


def _agent_rows() -> Iterator[dict[str, Any]]:
    """fleet-001 .. fleet-099, offline; fleet-000 is left for the bench to register through the API."""
    seen = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)
    for i in range(1, FLEET):
        yield {
            "id": fleet_agent(i),
            "hostname": f"host-{i}",
            "labels": "{}",
            "version": "0.1.0",
            "executors": json.dumps([t for t, _ in TYPES]),
            "max_concurrency": 4,
            "disabled": False,
            "last_seen_at": seen,
            "registered_at": seen,
        }


def fill(url: str, n: int, days: float = 90.0) -> dict[str, Any]:
    """Migrate the database at `url` and write `n` finished tasks (and log lines for some); timings."""
    engine = make_engine(url)
    try:
        t0 = time.perf_counter()
        migrate(engine)
        rng = random.Random(7)
        logged = sorted(rng.sample(range(1, n + 1), int(n * LOGGED_SHARE)))
        writer = _write_sqlite if engine.dialect.name == "sqlite" else _write_postgres
        writer(engine, AGENTS, _agent_rows())
        t1 = time.perf_counter()
        writer(engine, TASKS, task_rows(n, days))
        t2 = time.perf_counter()
        writer(engine, TASK_LOGS, _log_rows(logged, 1))
        t3 = time.perf_counter()
        if engine.dialect.name == "postgresql":
            _after_copy_postgres(engine)
        return {
            "tasks": n,
            "log_lines": len(logged) * LINES_PER_LOGGED,
            "tasks_s": round(t2 - t1, 1),
            "logs_s": round(t3 - t2, 1),
            "total_s": round(time.perf_counter() - t0, 1),
        }
    finally:
        engine.dispose()


def _write_sqlite(engine: Engine, table: Any, rows: Iterator[dict[str, Any]]) -> None:
    first = next(rows, None)
    if first is None:
        return
    names = _columns(table, first)
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA synchronous=OFF")  # a bench fill: a crash just means filling again
        batch = [tuple(_sqlite_value(first.get(c)) for c in names)]
        for row in rows:
            batch.append(tuple(_sqlite_value(row.get(c)) for c in names))
            if len(batch) >= BATCH:
                cur.executemany(sql, batch)
                batch.clear()
        cur.executemany(sql, batch)
        raw.commit()
    finally:
        raw.close()


def _write_postgres(engine: Engine, table: Any, rows: Iterator[dict[str, Any]]) -> None:
    first = next(rows, None)
    if first is None:
        return
    names = _columns(table, first)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
            copy.write_row([first.get(c) for c in names])
            for row in rows:
                copy.write_row([row.get(c) for c in names])
        raw.commit()
    finally:
        raw.close()


def _after_copy_postgres(engine: Engine) -> None:
    """Explicit ids leave the sequences behind. VACUUM ANALYZE does at once what autovacuum would soon do
    to so many new rows: statistics for the planner, and the visibility map index-only scans need."""
    raw = engine.raw_connection()
    try:
        raw.driver_connection.autocommit = True  # type: ignore[union-attr]  # VACUUM: outside a transaction
        cur = raw.cursor()
        for table in ("tasks", "task_logs"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT max(id) FROM {table}), 1))"
            )
            cur.execute(f"VACUUM ANALYZE {table}")
    finally:
        raw.close()
