"""`postgres`: psycopg 3 in the shared connection pool; batches, rollback SQL, and server-side cancel."""

from __future__ import annotations

from typing import ClassVar

from executors.db.base import TargetRun
from executors.db.params import Target
from executors.db.sql import SqlExecutor, SqlSession


class PostgresExecutor(SqlExecutor):
    """`postgres`."""

    type: ClassVar[str] = "postgres"
    dialect: ClassVar[str] = "postgres"

    def driver_modules(self, targets: list[Target]) -> list[str]:
        return [*super().driver_modules(targets), "psycopg", "executors.db.postgres_conn"]

    def connect(self, target: Target, run: TargetRun) -> SqlSession:
        from executors.db.postgres_conn import open_session  # psycopg and sqlglot: agent side only

        return open_session(target)
