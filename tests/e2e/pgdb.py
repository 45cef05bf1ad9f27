"""Fresh PostgreSQL databases for clouds under test, on the machine's server (trust auth)."""

from __future__ import annotations

import os
import uuid

import pytest

ADMIN_DSN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


class PgDatabases:
    """Creates `tg_<random>` databases and drops them at the end; fails in CI when the server is down."""

    def __init__(self) -> None:
        import psycopg

        try:
            self._admin = psycopg.connect(**ADMIN_DSN, autocommit=True, connect_timeout=5)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable in CI: {exc}")
            pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
        self._names: list[str] = []

    def create(self) -> str:
        name = f"tg_{uuid.uuid4().hex[:12]}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self._names.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    def drop_all(self) -> None:
        for name in self._names:
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin.close()
