"""The Alembic migrations build exactly the tables the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine
from sqlmodel import SQLModel

import cloud.db.models  # noqa: F401  (registers the tables)
from cloud.db.engine import MIGRATIONS_DIR, make_engine, migrate
from cloud.db.models import TASKS
from cloud.services.logs import list_logs, store_lines
from tests.e2e.pgdb import PgDatabases
from wire.tasks import LogLine


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    dbs = PgDatabases()
    try:
        yield dbs.create()
    finally:
        dbs.drop_all()


def test_migrations_match_the_models(url: str) -> None:
    engine = create_engine(url)
    try:
        migrate(engine)
        migrate(engine)  # a second start finds nothing to do
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    finally:
        engine.dispose()
    # Types are compared loosely by Alembic; what matters here is that no table, column or index is missing.
    assert [d for d in diff if d[0] not in ("modify_type", "modify_default")] == []


def _to(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_lines_stored_a_row_each_keep_their_ids_through_the_log_runs_migration(url: str) -> None:
    engine = make_engine(url)
    _to(engine, "0007")
    insert = "INSERT INTO task_logs (task_id, attempt, seq, stream, level, message, timestamp) VALUES "
    with engine.begin() as conn:
        for seq in (1, 2):
            conn.exec_driver_sql(insert + f"(7, 1, {seq}, 'stdout', 'info', 'old {seq}', '2026-01-01 00:00:00')")
    _to(engine, "head")
    task = SimpleNamespace(id=7, attempts=1, next_seq=3, log_bytes=0)
    with engine.begin() as conn:
        row = {"agent_id": "a1", "type": "shell", "command": "seq", "status": "running", "task_token": "t"}
        conn.execute(TASKS.insert().values(id=7, attempts=1, next_seq=3, **row))
        store_lines(conn, task, [LogLine(seq=3, message="new 3", more=["new 4"])])
        lines = list_logs(conn, 7, 0, 10)
        assert list_logs(conn, 7, lines[2][0], 10) == lines[3:]  # resuming inside the new run
    assert [(ln[0], ln[2], ln[5]) for ln in lines[:2]] == [(1, 1, "old 1"), (2, 2, "old 2")]  # ids as before
    assert [ln[5] for ln in lines[2:]] == ["new 3", "new 4"] and lines[2][0] > 2 and lines[3][0] == lines[2][0] + 1
    with pytest.raises(RuntimeError, match="rows of several lines"):
        _to(engine, "0007", down=True)  # the older schema has no way to hold the run
    engine.dispose()
