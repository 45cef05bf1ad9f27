"""Which namespace an object lands in: its own, else params.namespace, else the agent's, else the kubeconfig
context's (or the pod's), else `default`; cluster-scoped kinds ignore all of them."""

from __future__ import annotations

from pathlib import Path

from tests.integration.k8s.conftest import Cluster, entry
from tests.integration.k8s.manifests import as_yaml, configmap
from wire.tasks import TaskStatus


def _namespace(cluster: Cluster) -> str:
    ns = cluster.names("tg-ns")
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, manager="tests")
    cluster.remember("v1", "Namespace", ns)
    return ns


def test_the_objects_own_namespace_wins_then_params_then_the_agents(cluster: Cluster) -> None:
    other = _namespace(cluster)
    agents = cluster.namespace
    command = as_yaml(configmap("own", namespace=other), configmap("plain"))

    out, _ = cluster.run(command, namespace=other)
    assert out.status is TaskStatus.success, out.error
    assert [(d["name"], d["namespace"]) for d in out.data] == [("own", other), ("plain", other)]

    out, _ = cluster.run(as_yaml(configmap("own", namespace=other), configmap("agents")))
    assert out.status is TaskStatus.success, out.error
    assert [(d["name"], d["namespace"]) for d in out.data] == [("own", other), ("agents", agents)]
    assert cluster.get("v1", "ConfigMap", "agents", agents) is not None


def test_without_any_namespace_objects_go_to_default(cluster: Cluster) -> None:
    expected = cluster.context_namespace() or "default"  # a real kubeconfig's context may name one
    name = cluster.names("tg-default")
    cluster.remember("v1", "ConfigMap", name, expected)
    out, _ = cluster.run(as_yaml(configmap(name)), config=cluster.agent_config(namespace=None))
    assert out.status is TaskStatus.success, out.error
    assert entry(out)["namespace"] == expected
    assert cluster.get("v1", "ConfigMap", name, expected) is not None


def test_cluster_scoped_kinds_ignore_every_namespace(cluster: Cluster) -> None:
    ns = cluster.names("tg-scoped")
    cluster.remember("v1", "Namespace", ns)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "namespace": "ignored"}}
    out, ctx = cluster.run(as_yaml(namespace), namespace=cluster.namespace)
    assert out.status is TaskStatus.success, out.error
    assert out.data == [{"kind": "Namespace", "name": ns, "namespace": "", "action": "created"}]
    assert f"[1/1] Namespace {ns} created" in [m for _, m in ctx.lines]


def test_the_kubeconfig_contexts_namespace_comes_after_the_agents(fake_cluster: Cluster, tmp_path: Path) -> None:
    fake = fake_cluster.fake
    assert fake is not None
    kubeconfig = fake.write_kubeconfig(tmp_path / "with-namespace", namespace=fake_cluster.namespace)
    config = {"kubeconfig": str(kubeconfig)}
    out, _ = fake_cluster.run(as_yaml(configmap("ctx")), config=config)
    assert out.status is TaskStatus.success, out.error
    assert entry(out)["namespace"] == fake_cluster.namespace

    other = _namespace(fake_cluster)
    out, _ = fake_cluster.run(as_yaml(configmap("agent")), config={**config, "namespace": other})
    assert entry(out)["namespace"] == other
