"""What only the fake API server can force: RBAC refusals, a concurrent writer, bad credentials, the exact
requests sent. These always run on the fake, also when a real cluster is configured."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.k8s.conftest import Cluster, entry
from tests.integration.k8s.manifests import as_yaml, configmap, deployment
from wire.tasks import TaskStatus


def test_forbidden_names_the_verb_and_resource_the_account_lacks(fake_cluster: Cluster) -> None:
    assert fake_cluster.fake is not None
    fake_cluster.run(as_yaml(deployment("web")))
    fake_cluster.fake.deny("patch", "deployments")
    out, _ = fake_cluster.run(as_yaml(deployment("web", replicas=2)))
    assert out.status is TaskStatus.failed
    ns = fake_cluster.namespace
    assert out.error.startswith(
        f"failed to apply Deployment {ns}/web: forbidden: the agent's Kubernetes account may not patch "
        f"deployments.apps in namespace {ns} (grant it in the agent's Role)"
    )
    assert entry(out, -1)["action"] == "failed" and entry(out, -1)["reason"] == "Forbidden"


def test_apply_creating_an_object_is_refused_as_create(fake_cluster: Cluster) -> None:
    assert fake_cluster.fake is not None
    fake_cluster.fake.deny("create", "configmaps")
    out, _ = fake_cluster.run(as_yaml(configmap("new")))
    assert out.status is TaskStatus.failed
    assert f"may not create configmaps in namespace {fake_cluster.namespace}" in out.error


def test_update_retries_when_someone_else_wrote_the_object_meanwhile(fake_cluster: Cluster) -> None:
    assert fake_cluster.fake is not None
    fake_cluster.run(as_yaml(configmap("conf", a="1")))
    fake_cluster.fake.stale_puts = 1
    out, ctx = fake_cluster.run(as_yaml(configmap("conf", a="2")), operation="update")
    assert out.status is TaskStatus.success, out.error
    assert entry(out)["action"] == "updated"
    assert any("changed while we updated it (409 Conflict); retry 1/4" in m for _, m in ctx.lines)
    assert [s.code for s in fake_cluster.fake.requests("PUT")] == [409, 200]

    fake_cluster.fake.stale_puts = 99  # a writer that never stops
    out, _ = fake_cluster.run(as_yaml(configmap("conf", a="3")), operation="update")
    assert out.status is TaskStatus.failed
    assert "conflict: Operation cannot be fulfilled" in out.error and "the object has been modified" in out.error
    assert len(fake_cluster.fake.requests("PUT")) == 2 + 5


def test_requests_carry_the_field_manager_and_force_only_when_asked(fake_cluster: Cluster) -> None:
    fake = fake_cluster.fake
    assert fake is not None
    fake_cluster.run(as_yaml(configmap("conf")))
    fake_cluster.run(as_yaml(configmap("conf", a="1")), force=True)
    patches = [s for s in fake.requests("PATCH") if "/configmaps/" in s.path]
    applies = [s for s in patches if s.content_type == "application/apply-patch+yaml"]
    assert [s.query.get("fieldManager") for s in applies] == ["tiangong", "tiangong"]
    assert [s.query.get("force") for s in applies] == [None, "true"]

    named = as_yaml(configmap("conf"))
    fake_cluster.run(named, operation="patch", patch_type="merge")
    fake_cluster.run(
        named, operation="patch", patch_type="json", patch=[{"op": "add", "path": "/data/b", "value": "2"}]
    )
    patches = [s for s in fake.requests("PATCH") if "/configmaps/" in s.path]
    assert [s.content_type for s in patches[2:]] == [
        "application/merge-patch+json",
        "application/json-patch+json",
    ]


def test_the_preinstalled_crds_kind_is_found_by_discovery(fake_cluster: Cluster) -> None:
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {color: blue}\n"
    out, _ = fake_cluster.run(widget)
    assert out.status is TaskStatus.success, out.error
    assert out.data == [{"kind": "Widget", "name": "w", "namespace": fake_cluster.namespace, "action": "created"}]


def test_refused_credentials(fake_cluster: Cluster, tmp_path: Path) -> None:
    assert fake_cluster.fake is not None
    kubeconfig = fake_cluster.fake.write_kubeconfig(tmp_path / "wrong-token", token="not-the-token")
    out, _ = fake_cluster.run(as_yaml(configmap("x")), config={"kubeconfig": str(kubeconfig)})
    assert out.status is TaskStatus.failed
    assert out.error == "unauthorized: the API server refused the agent's credentials"


def test_an_unreachable_api_server(fake_cluster: Cluster, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "nowhere"
    assert fake_cluster.fake is not None
    text = fake_cluster.kubeconfig.read_text(encoding="utf-8")
    kubeconfig.write_text(text.replace(fake_cluster.fake.url, f"http://127.0.0.1:{port}"), encoding="utf-8")
    out, _ = fake_cluster.run(as_yaml(configmap("x")), config={"kubeconfig": str(kubeconfig)})
    assert out.status is TaskStatus.failed
    assert out.error.startswith(f"cannot reach the Kubernetes API at http://127.0.0.1:{port}")


def test_no_kubeconfig_and_not_in_a_pod(fake_cluster: Cluster, tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    out, _ = fake_cluster.run(as_yaml(configmap("x")), config={"kubeconfig": str(missing)})
    assert out.status is TaskStatus.failed
    assert out.error.startswith(f"no cluster access through kubeconfig {missing}")
    assert "(set kubeconfig in the agent config, or KUBECONFIG)" in out.error
