"""The Alembic migrations build exactly the tables the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import cloud.db.models  # noqa: F401  (registers the tables)
from cloud.db.engine import migrate
from tests.e2e.pgdb import PgDatabases


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
