"""Fixtures: one shared cloud + agent per module, and a factory for tests that need their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Cloud, cloud_env


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A cloud with one agent `local` (concurrency 4), shared by a module's tests."""
    c = Cloud(tmp_path_factory.mktemp("cloud"), cloud_env()).start()
    c.agent("local", max_concurrency=4)
    yield c
    c.close()


@pytest.fixture
def make_cloud(tmp_path: Path) -> Iterator[Callable[..., Cloud]]:
    """Start a cloud of the test's own, with TIANGONG_* settings given as keyword arguments."""
    started: list[Cloud] = []

    def factory(**settings: str) -> Cloud:
        env = cloud_env(**{f"TIANGONG_{k.upper()}": str(v) for k, v in settings.items()})
        c = Cloud(tmp_path / f"cloud{len(started)}", env).start()
        started.append(c)
        return c

    yield factory
    for c in started:
        c.close()
