"""Fixtures for fault tests: the database backends and a factory of clusters that are torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.pgdb import PgDatabases
from tests.faults.harness import Cluster

MakeCluster = Callable[..., Cluster]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The embedded SQLite or the machine's PostgreSQL (a fresh database per cluster)."""
    return str(request.param)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """`make_cluster(backend, replicas=1, process=False, **cloud_settings)`: a started cluster, closed
    after the test (before its database is dropped). Its replicas serve from threads unless the test
    kills or inspects them (`process=True`); agents are always processes. The end of every process's log
    is printed at teardown, which pytest shows when the test fails."""
    started: list[Cluster] = []
    dbs: list[PgDatabases] = []

    def factory(backend: str, replicas: int = 1, process: bool = False, **settings: object) -> Cluster:
        url = None
        if backend == "postgres":
            if not dbs:
                dbs.append(PgDatabases())
            url = dbs[0].create()
        cluster = Cluster(tmp_path / f"cluster{len(started)}", url, replicas, process, **settings)
        started.append(cluster)
        return cluster.start()

    yield factory
    for cluster in started:
        cluster.close()
        print(cluster.log_tails())
    for d in dbs:
        d.drop_all()
