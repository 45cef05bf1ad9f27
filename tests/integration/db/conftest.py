"""Real MariaDB and PostgreSQL servers for the SQL task types: each test gets a database of its own.

Locally a test whose server is down is skipped with the reason; in CI (`CI=true`) it fails instead
(`tests.servers.unavailable`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.servers import unavailable
from tests.servers.mongo import MongoServer, running_mongo
from tests.servers.search import SearchServer, running_search

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
POSTGRES: dict[str, Any] = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
PASSWORD = "Tg-s3cret-pw-91"
"""The password of the account the MySQL tests use; it must never show in results, errors or logs."""


@dataclass
class MariaDb:
    """A database of the test's own on the machine's MariaDB, and an account with a password for it."""

    name: str
    user: str

    def target(self, **extra: Any) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": 3306, "user": self.user, "password": PASSWORD, "db": self.name, **extra}

    def connect(self) -> Any:
        import pymysql

        return pymysql.connect(**MARIADB, database=self.name, autocommit=True)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)
                return list(cur.fetchall())
        finally:
            conn.close()


@pytest.fixture(scope="session")
def mariadb_account() -> Iterator[str]:
    import pymysql

    try:
        conn = pymysql.connect(**MARIADB, autocommit=True, connect_timeout=5)
    except pymysql.MySQLError as exc:
        unavailable("MariaDB on 127.0.0.1:3306", exc)
    user = f"tg_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'")
        cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{PASSWORD}'")
    yield user
    with conn.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        cur.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
    conn.close()


@pytest.fixture
def mariadb(mariadb_account: str) -> Iterator[MariaDb]:
    """A fresh database `t_<random>` the account may use (and PROCESS, to see its own queries run)."""
    import pymysql

    name = f"t_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(**MARIADB, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        for host in ("%", "localhost"):
            cur.execute(f"GRANT ALL ON `{name}`.* TO '{mariadb_account}'@'{host}'")
    yield MariaDb(name, mariadb_account)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


@dataclass
class PgDb:
    """A database of the test's own on the machine's PostgreSQL (trust auth)."""

    name: str

    def target(self, **extra: Any) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": 5432,
            "user": "postgres",
            "password": PASSWORD,
            "database": self.name,
            **extra,
        }

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(**{**POSTGRES, "dbname": self.name}, autocommit=True) as conn:
            cur = conn.execute(sql, args or None)
            return list(cur.fetchall()) if cur.description else []


@pytest.fixture
def pg() -> Iterator[PgDb]:
    import psycopg

    try:
        admin = psycopg.connect(**POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        unavailable("PostgreSQL on 127.0.0.1:5432", exc)
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    yield PgDb(name)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def mariadb_second(mariadb_account: str) -> Iterator[MariaDb]:
    """A second database, for tests that work on two targets."""
    yield from mariadb.__wrapped__(mariadb_account)  # type: ignore[attr-defined]


@pytest.fixture
def pg_second() -> Iterator[PgDb]:
    """A second database, for tests that work on two targets."""
    yield from pg.__wrapped__()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def mongo() -> Iterator[MongoServer]:
    """One MongoDB (a real one from TIANGONG_TEST_MONGO_URL, else the wire-level stand-in) per worker."""
    with running_mongo() as server:
        yield server


@pytest.fixture
def client(mongo: MongoServer) -> Iterator[Any]:
    """A pymongo client of `mongo`."""
    c = mongo.client()
    yield c
    c.close()


@pytest.fixture
def db(mongo: MongoServer, client: Any) -> Iterator[str]:
    """A fresh MongoDB database name, dropped afterwards."""
    name = f"tg_{uuid.uuid4().hex[:10]}"
    yield name
    client.drop_database(name)


@pytest.fixture(scope="session")
def search() -> Iterator[SearchServer]:
    """One Elasticsearch/OpenSearch (a real one from the environment, else the stand-in) per worker."""
    with running_search() as server:
        yield server
