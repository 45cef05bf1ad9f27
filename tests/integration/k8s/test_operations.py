"""apply, create, update, delete and patch through the real kubernetes client, against the fake API server
or a real cluster (TIANGONG_TEST_KUBECONFIG)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.k8s.conftest import Cluster, entry
from tests.integration.k8s.manifests import as_json, as_yaml, configmap, crd, deployment
from wire.tasks import TaskStatus


def test_apply_creates_then_reports_unchanged_then_configured(cluster: Cluster) -> None:
    ns = cluster.namespace
    out, ctx = cluster.run(as_yaml(deployment("web", replicas=1)))
    assert out.status is TaskStatus.success, out.error
    assert out.data == [{"kind": "Deployment", "name": "web", "namespace": ns, "action": "created"}]
    assert f"[1/1] Deployment {ns}/web created" in [m for _, m in ctx.lines]
    shown = json.loads(out.result)  # seed 004: the resulting object as JSON
    assert shown["kind"] == "Deployment" and shown["metadata"]["uid"] and shown["metadata"]["resourceVersion"]
    assert "managedFields" not in shown["metadata"]

    again, _ = cluster.run(as_yaml(deployment("web", replicas=1)))
    assert again.status is TaskStatus.success, again.error
    assert entry(again)["action"] == "unchanged"

    scaled, _ = cluster.run(as_yaml(deployment("web", replicas=3)))
    assert scaled.status is TaskStatus.success, scaled.error
    assert entry(scaled)["action"] == "configured"
    live = cluster.get("apps/v1", "Deployment", "web")
    assert live is not None and live["spec"]["replicas"] == 3


def test_several_documents_are_handled_in_order(cluster: Cluster) -> None:
    ns = cluster.namespace
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"pw": "s3cr3t"}}
    listed = {"apiVersion": "v1", "kind": "List", "items": [configmap("b", x="2"), secret]}
    command = "# a comment-only document\n---\n" + as_yaml(configmap("a", x="1")) + "---\n---\n" + as_yaml(listed)
    out, ctx = cluster.run(command)
    assert out.status is TaskStatus.success, out.error
    assert [(d["kind"], d["name"], d["action"]) for d in out.data] == [
        ("ConfigMap", "a", "created"),
        ("ConfigMap", "b", "created"),
        ("Secret", "creds", "created"),
    ]
    lines = [m for _, m in ctx.lines]
    assert lines.index(f"[1/3] ConfigMap {ns}/a created") < lines.index(f"[3/3] Secret {ns}/creds created")
    result = json.loads(out.result)
    assert result["kind"] == "List" and [i["metadata"]["name"] for i in result["items"]] == ["a", "b", "creds"]
    assert "s3cr3t" not in out.result and "czNjcjN0" not in out.result  # the Secret's value, plain or base64
    assert cluster.get("v1", "Secret", "creds") is not None


def test_json_is_detected_and_create_refuses_an_existing_object(cluster: Cluster) -> None:
    ns = cluster.namespace
    first, _ = cluster.run(as_json(deployment("api")), operation="create")
    assert first.status is TaskStatus.success, first.error
    assert first.data == [{"kind": "Deployment", "name": "api", "namespace": ns, "action": "created"}]

    second, ctx = cluster.run(as_yaml(configmap("fresh")) + "---\n" + as_json(deployment("api")), operation="create")
    assert second.status is TaskStatus.failed
    assert second.error == f"failed to create Deployment {ns}/api: Deployment {ns}/api already exists"
    assert [d["action"] for d in second.data] == ["created", "failed"]  # the ConfigMap before it was made
    assert entry(second, 1)["reason"] == "AlreadyExists"
    assert any(stream.value == "stderr" and "already exists" in m for stream, m in ctx.lines)


def test_create_with_generate_name_reports_the_name_the_server_chose(cluster: Cluster) -> None:
    made = "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: run-}\ndata: {a: '1'}\n"
    out, ctx = cluster.run(made, operation="create")
    assert out.status is TaskStatus.success, out.error
    name = entry(out)["name"]
    assert name.startswith("run-") and len(name) > len("run-")
    assert f"[1/1] ConfigMap {cluster.namespace}/{name} created" in [m for _, m in ctx.lines]
    assert cluster.get("v1", "ConfigMap", name) is not None


def test_update_replaces_the_object_and_needs_it_to_exist(cluster: Cluster) -> None:
    cluster.run(as_yaml(configmap("conf", a="1", b="2")))
    out, _ = cluster.run(as_yaml(configmap("conf", c="3")), operation="update")
    assert out.status is TaskStatus.success, out.error
    assert entry(out)["action"] == "updated"
    live = cluster.get("v1", "ConfigMap", "conf")
    assert live is not None and live["data"] == {"c": "3"}  # replaced, not merged

    missing, _ = cluster.run(as_yaml(configmap("nope", c="3")), operation="update")
    assert missing.status is TaskStatus.failed
    assert f"ConfigMap {cluster.namespace}/nope not found" in missing.error


def test_delete_then_not_found_unless_ignored(cluster: Cluster) -> None:
    ns = cluster.namespace
    cluster.run(as_yaml(deployment("gone")))
    out, _ = cluster.run(as_yaml(deployment("gone")), operation="delete", propagation_policy="Foreground")
    assert out.status is TaskStatus.success, out.error
    assert out.data == [{"kind": "Deployment", "name": "gone", "namespace": ns, "action": "deleted"}]
    live = cluster.get("apps/v1", "Deployment", "gone")
    assert live is None or live["metadata"].get("deletionTimestamp")  # foreground: may linger a moment
    if cluster.fake is not None:
        assert cluster.fake.requests("DELETE")[-1].query["propagationPolicy"] == "Foreground"

    ghost = as_yaml(configmap("ghost"))
    missing, _ = cluster.run(ghost, operation="delete")
    assert missing.status is TaskStatus.failed and f"ConfigMap {ns}/ghost not found" in missing.error
    ignored, _ = cluster.run(ghost, operation="delete", ignore_not_found=True)
    assert ignored.status is TaskStatus.success
    assert ignored.data == [{"kind": "ConfigMap", "name": "ghost", "namespace": ns, "action": "absent"}]


def test_strategic_patch_merges_containers_by_name(cluster: Cluster) -> None:
    cluster.run(as_yaml(deployment("web", sidecar=True)))
    patch = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
    patch += "spec: {template: {spec: {containers: [{name: main, image: 'registry.k8s.io/pause:3.10'}]}}}\n"
    out, _ = cluster.run(patch, operation="patch")
    assert out.status is TaskStatus.success, out.error
    assert entry(out)["action"] == "patched"
    live = cluster.get("apps/v1", "Deployment", "web")
    assert live is not None
    images = {c["name"]: c["image"] for c in live["spec"]["template"]["spec"]["containers"]}
    assert images == {"main": "registry.k8s.io/pause:3.10", "sidecar": "registry.k8s.io/pause:3.9"}

    again, _ = cluster.run(patch, operation="patch", patch_type="strategic")
    assert again.status is TaskStatus.success, again.error
    assert entry(again)["action"] == "unchanged"


def test_merge_patch_removes_a_key_given_null(cluster: Cluster) -> None:
    cluster.run(as_yaml(configmap("conf", a="1", b="2")))
    patch = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf}\ndata: {a: null, c: '3'}\n"
    out, _ = cluster.run(patch, operation="patch", patch_type="merge")
    assert out.status is TaskStatus.success, out.error
    live = cluster.get("v1", "ConfigMap", "conf")
    assert live is not None and live["data"] == {"b": "2", "c": "3"}


def test_json_patch_from_params_changes_the_named_object(cluster: Cluster) -> None:
    cluster.run(as_yaml(deployment("web", replicas=1)))
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 2},
        {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
    ]
    named = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
    out, _ = cluster.run(named, operation="patch", patch_type="json", patch=ops)
    assert out.status is TaskStatus.success, out.error
    live = cluster.get("apps/v1", "Deployment", "web")
    assert live is not None and live["spec"]["replicas"] == 2 and live["metadata"]["labels"]["tier"] == "front"

    failing, _ = cluster.run(named, operation="patch", patch_type="json", patch=[{"op": "remove", "path": "/nope"}])
    assert failing.status is TaskStatus.failed and "Deployment" in failing.error


def test_a_crd_and_its_custom_resource_in_one_task(cluster: Cluster) -> None:
    group = f"{cluster.names('g')}.tiangong.test"
    cluster.remember("apiextensions.k8s.io/v1", "CustomResourceDefinition", f"gadgets.{group}")
    gadget = {"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"size": 1}}
    out, _ = cluster.run(as_yaml(crd(group, "Gadget", "gadgets"), gadget), timeout=60)
    assert out.status is TaskStatus.success, out.error
    assert [(d["kind"], d["namespace"], d["action"]) for d in out.data] == [
        ("CustomResourceDefinition", "", "created"),  # cluster-scoped: no namespace
        ("Gadget", cluster.namespace, "created"),
    ]

    # Custom resources take no strategic merge patch: the default falls back to a merge patch...
    patch = as_yaml({"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"size": 2}})
    patched, ctx = cluster.run(patch, operation="patch")
    assert patched.status is TaskStatus.success, patched.error
    assert any("sending a merge patch" in m for _, m in ctx.lines)
    live = cluster.get(f"{group}/v1", "Gadget", "g1")
    assert live is not None and live["spec"]["size"] == 2
    # ...but an explicit strategic patch is refused with the API's words.
    strict, _ = cluster.run(patch, operation="patch", patch_type="strategic")
    assert strict.status is TaskStatus.failed and "does not accept this patch for Gadget" in strict.error


def test_an_unknown_kind_is_named(cluster: Cluster) -> None:
    out, _ = cluster.run("apiVersion: nowhere.example/v1\nkind: Nothing\nmetadata: {name: x}\n")
    assert out.status is TaskStatus.failed
    assert "the cluster has no kind Nothing in apiVersion nowhere.example/v1" in out.error


def test_invalid_object_names_the_fields(cluster: Cluster) -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: bare}\nspec: {containers: [{name: main}]}\n"
    out, _ = cluster.run(pod, operation="create")
    assert out.status is TaskStatus.failed
    assert f"invalid Pod {cluster.namespace}/bare:" in out.error
    assert "spec.containers[0].image: Required value" in out.error


def test_apply_conflict_with_another_manager_needs_force(cluster: Cluster) -> None:
    cluster.create({**deployment("shared", replicas=1), "metadata": {"name": "shared"}}, manager="other-team")
    out, _ = cluster.run(as_yaml(deployment("shared", replicas=4)))
    assert out.status is TaskStatus.failed
    assert "conflict" in out.error and "other-team" in out.error and "params.force" in out.error

    forced, _ = cluster.run(as_yaml(deployment("shared", replicas=4)), force=True)
    assert forced.status is TaskStatus.success, forced.error
    assert entry(forced)["action"] == "configured"
    live = cluster.get("apps/v1", "Deployment", "shared")
    assert live is not None and live["spec"]["replicas"] == 4


def test_manifests_from_a_file_come_before_the_command(cluster: Cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(as_yaml(configmap("from-file", a="1")), encoding="utf-8")
    out, _ = cluster.run(as_yaml(configmap("from-command")), file_id="file-7", files={"file-7": manifest})
    assert out.status is TaskStatus.success, out.error
    assert [d["name"] for d in out.data] == ["from-file", "from-command"]
