"""PostgreSQL going away and coming back: callers get 503 (not 500) meanwhile, and nothing is lost."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.e2e.harness import Cloud
from tests.e2e.pgdb import ADMIN_DSN, PgDatabases
from tests.e2e.test_reliability import MakeCloud


@pytest.fixture(scope="module")
def backend() -> Iterator[PgDatabases]:
    """PostgreSQL only: SQLite is a file inside the cloud's process and cannot go away on its own."""
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


def _database(cloud: Cloud) -> str:
    return cloud.database_url.rsplit("/", 1)[1]


def test_the_database_away_is_503_and_work_resumes(make_cloud: MakeCloud) -> None:
    cloud = make_cloud()
    cloud.agent("local")
    before = cloud.run(type="shell", command="echo before")
    assert before["status"] == "success"
    name = _database(cloud)
    with psycopg.connect(**ADMIN_DSN, autocommit=True) as admin:  # type: ignore[arg-type]
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            r = cloud.http.get(f"/api/v1/tasks/{before['id']}")
            assert r.status_code == 503
            assert r.json() == {"error": "database unavailable; try again shortly"}
            assert r.headers["retry-after"] == "1"
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    # Back: the agent, which kept retrying, runs new work; the old task is intact.
    after = cloud.run(type="shell", command="echo after")
    assert (after["status"], after["result"]) == ("success", "after\n")
    assert cloud.task(before["id"])["result"] == "before\n"
