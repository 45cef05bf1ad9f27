"""A cluster for the `k8s` task type: the fake API server, or a real cluster when TIANGONG_TEST_KUBECONFIG
names a kubeconfig (and TIANGONG_TEST_KUBECONTEXT optionally a context). Either way each test gets a
namespace of its own and reaches the cluster through a kubeconfig file, as an agent would.

Tests that need behaviour only the fake can force (an RBAC refusal, a concurrent write) take the
`fake_cluster` fixture, which is always the fake, so nothing here is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from executors.base import Outcome
from executors.k8s import KubernetesExecutor
from executors.k8s.client import close_all
from tests.fakes.kube_api import FakeKubeApi
from tests.unit.executors.harness import Harness, make_task


@dataclass
class Cluster:
    """A cluster, a namespace of the test's own on it, and a client to check what tasks did."""

    kubeconfig: Path
    context: str | None
    namespace: str
    workdir: Path
    fake: FakeKubeApi | None = None
    poll_seconds: float = 1.0
    client: Any = None
    _cleanup: list[tuple[str, str, str, str | None]] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return self.fake is None

    def agent_config(self, **overrides: Any) -> dict[str, Any]:
        """The agent config an agent on this cluster would have (None values are left out)."""
        config = {"kubeconfig": str(self.kubeconfig), "context": self.context, "namespace": self.namespace}
        return {k: v for k, v in (config | overrides).items() if v is not None}

    def run(
        self,
        command: str,
        *,
        timeout: float = 30.0,
        config: dict[str, Any] | None = None,
        on_line: Callable[[Harness, str], None] | None = None,
        file_id: str = "",
        files: dict[str, Path] | None = None,
        **params: Any,
    ) -> tuple[Outcome, Harness]:
        """Run one k8s task against this cluster with the executor itself (no cloud, no agent)."""
        task = make_task(command, type="k8s", file_id=file_id, exec_timeout=max(1, int(timeout)), **params)

        async def main() -> tuple[Outcome, Harness]:
            ctx = Harness(
                workdir=self.workdir,
                deadline=asyncio.get_running_loop().time() + timeout,
                config=self.agent_config() if config is None else config,
                files=files or {},
                on_line=on_line,
            )
            return await KubernetesExecutor(poll_seconds=self.poll_seconds).run(task, ctx), ctx

        return asyncio.run(main())

    def resource(self, api_version: str, kind: str) -> Any:
        return self.client.resources.get(api_version=api_version, kind=kind)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as the cluster has it now, or None."""
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self.resource(api_version, kind)
        try:
            obj = resource.get(name=name, namespace=(namespace or self.namespace) if resource.namespaced else None)
        except NotFoundError:
            return None
        return dict(obj.to_dict())

    def create(self, obj: dict[str, Any], *, manager: str = "someone-else") -> dict[str, Any]:
        """Server-side apply `obj` as another field manager (as another team or tool would)."""
        resource = self.resource(obj["apiVersion"], obj["kind"])
        namespace = obj["metadata"].get("namespace", self.namespace) if resource.namespaced else None
        return dict(resource.server_side_apply(body=obj, namespace=namespace, field_manager=manager).to_dict())

    def remember(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete this object when the test ends (for objects outside the test's namespace)."""
        self._cleanup.append((api_version, kind, name, namespace))

    def context_namespace(self) -> str | None:
        """The namespace the kubeconfig's context names, if any."""
        from kubernetes import config

        contexts, current = config.list_kube_config_contexts(str(self.kubeconfig))
        chosen = next((c for c in contexts if c["name"] == self.context), current) if self.context else current
        return (chosen.get("context") or {}).get("namespace")

    def names(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:6]}"

    def close(self) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        for api_version, kind, name, namespace in reversed(self._cleanup):
            with contextlib.suppress(NotFoundError):
                self.resource(api_version, kind).delete(name=name, namespace=namespace)
        self.client.client.close()
        close_all()  # the executor's cached clients: their connections end with this test's cluster


def entry(out: Outcome, index: int = 0) -> dict[str, Any]:
    """`out.data[index]`, or a failure saying what the task reported instead (not an IndexError)."""
    data = out.data if isinstance(out.data, list) else []
    assert -len(data) <= index < len(data), (
        f"the task reported no object #{index} ({out.status.value}: {out.error or 'no error'}; data={out.data!r})"
    )
    item: dict[str, Any] = data[index]
    return item


def short_timeout(cluster: Cluster) -> int:
    """An execution limit meant to run out: 2 s on the fake; on a real cluster connecting and discovery
    alone can take seconds, so long enough that the task gets as far as waiting before it runs out."""
    return 15 if cluster.real else 2


def _client(kubeconfig: Path, context: str | None, cache: Path) -> Any:
    from kubernetes import client, config
    from kubernetes.dynamic import DynamicClient

    configuration = client.Configuration()
    config.load_kube_config(str(kubeconfig), context=context, client_configuration=configuration, persist_config=False)
    return DynamicClient(client.ApiClient(configuration), cache_file=str(cache))


def _open(kubeconfig: Path, context: str | None, tmp_path: Path, fake: FakeKubeApi | None) -> Cluster:
    workdir = tmp_path / "work"
    workdir.mkdir()
    namespace = f"tg-test-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(kubeconfig, context, namespace, workdir, fake, 0.02 if fake else 1.0)
    cluster.client = _client(kubeconfig, context, tmp_path / "discovery-cache.json")
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, manager="tests")
    cluster.remember("v1", "Namespace", namespace)
    return cluster


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Always the fake API server, reached through a generated kubeconfig."""
    with FakeKubeApi() as fake:
        cluster = _open(fake.write_kubeconfig(tmp_path / "kubeconfig"), "fake", tmp_path, fake)
        yield cluster
        cluster.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A real cluster when TIANGONG_TEST_KUBECONFIG is set, else the fake."""
    kubeconfig = os.environ.get("TIANGONG_TEST_KUBECONFIG")
    if not kubeconfig:
        with FakeKubeApi() as fake:
            cluster = _open(fake.write_kubeconfig(tmp_path / "kubeconfig"), "fake", tmp_path, fake)
            yield cluster
            cluster.close()
        return
    cluster = _open(Path(kubeconfig), os.environ.get("TIANGONG_TEST_KUBECONTEXT"), tmp_path, None)
    yield cluster
    cluster.close()
