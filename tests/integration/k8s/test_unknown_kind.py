"""A kind whose CRD went away after the agent discovered it: creating an object of it names the unknown kind
(the API answers 404 for the resource path itself), never "not found" as if the object were missing."""

from __future__ import annotations

from tests.integration.k8s.conftest import Cluster, entry
from tests.integration.k8s.manifests import as_yaml, crd
from wire.tasks import TaskStatus


def test_creating_an_object_whose_crd_is_gone_names_the_unknown_kind(fake_cluster: Cluster) -> None:
    group = f"{fake_cluster.names('g')}.tiangong.test"
    api_version = f"{group}/v1"

    def gadget(name: str) -> str:
        return as_yaml({"apiVersion": api_version, "kind": "Gadget", "metadata": {"name": name}, "spec": {"size": 1}})

    # The first task discovers Gadget; the agent's cached client keeps that discovery for the next tasks.
    first, _ = fake_cluster.run(as_yaml(crd(group, "Gadget", "gadgets")) + "---\n" + gadget("g1"), timeout=60)
    assert first.status is TaskStatus.success, first.error
    fake_cluster.resource("apiextensions.k8s.io/v1", "CustomResourceDefinition").delete(name=f"gadgets.{group}")

    expected = f"unknown kind {api_version}/Gadget: no such resource type on the server (is its CRD installed?)"
    for operation in ("create", "apply"):  # apply creates too (after a GET that finds nothing)
        out, _ = fake_cluster.run(gadget("g2"), operation=operation)
        assert out.status is TaskStatus.failed, operation
        assert expected in out.error, (operation, out.error)
        assert "not found" not in out.error
        assert (entry(out)["action"], entry(out)["reason"]) == ("failed", "NoKind")


def test_a_missing_object_and_a_missing_namespace_still_say_not_found(fake_cluster: Cluster) -> None:
    """The 404s that do name an object keep their words."""
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {color: blue}\n"
    out, _ = fake_cluster.run(widget, operation="update")
    assert out.status is TaskStatus.failed
    assert f"Widget {fake_cluster.namespace}/w not found" in out.error
    out, _ = fake_cluster.run(widget.replace("name: w}", "name: w, namespace: nowhere}"), operation="create")
    assert out.status is TaskStatus.failed
    assert 'not found: namespaces "nowhere" not found' in out.error
