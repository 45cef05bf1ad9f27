"""Fixtures: one shared cloud + agent per module, and a factory for tests that need their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Cloud, cloud_env
from tests.e2e.pgdb import PgDatabases

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[PgDatabases | None]:
    """Every API test runs on the embedded SQLite and on the machine's PostgreSQL (a database per cloud)."""
    if request.param == "sqlite":
        yield None
        return
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


def _backend_env(backend: PgDatabases | None) -> dict[str, str]:
    return {} if backend is None else {"TIANGONG_DATABASE_URL": backend.create()}


@pytest.fixture(scope="module")
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: PgDatabases | None
) -> Iterator[Cloud]:
    """A cloud with one agent `local` (concurrency 4), shared by a module's tests. It runs in a server
    thread unless the module sets `CLOUD_PROCESS = True` (it looks at the cloud's process); a module's
    `CLOUD_SETTINGS` (names without the TIANGONG_ prefix) configure it."""
    process = bool(getattr(request.module, "CLOUD_PROCESS", False))
    settings = {f"TIANGONG_{k.upper()}": str(v) for k, v in getattr(request.module, "CLOUD_SETTINGS", {}).items()}
    env = cloud_env(**_backend_env(backend), **settings)
    c = Cloud(tmp_path_factory.mktemp("cloud"), env, process=process).start()
    c.agent("local", max_concurrency=4)
    yield c
    c.close()


@pytest.fixture
def make_cloud(tmp_path: Path, backend: PgDatabases | None) -> Iterator[Callable[..., Cloud]]:
    """Start a cloud of the test's own, with TIANGONG_* settings given as keyword arguments."""
    started: list[Cloud] = []

    def factory(process: bool = False, **settings: str) -> Cloud:
        """`process=True` for a test that signals, kills or inspects the cloud's process."""
        env = cloud_env(**_backend_env(backend), **{f"TIANGONG_{k.upper()}": str(v) for k, v in settings.items()})
        c = Cloud(tmp_path / f"cloud{len(started)}", env, process=process).start()
        started.append(c)
        return c

    yield factory
    for c in started:
        c.close()
