"""What the cloud checks at POST time for a k8s task: params and manifests, without the kubernetes package."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from executors.k8s import KubernetesExecutor
from wire.tasks import TaskRequest

DEPLOY = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n"


def check(command: str = DEPLOY, file_id: str = "", **params: Any) -> None:
    KubernetesExecutor().validate(TaskRequest(type="k8s", command=command, params=params, file_id=file_id))


def test_the_seed_examples_pass() -> None:
    check()
    check(operation="create", namespace="production")
    check(operation="update", namespace="production")
    check("apiVersion: v1\nkind: Pod\nmetadata: {name: nginx-pod, namespace: default}\n", operation="delete")
    check(operation="patch", patch_type="strategic", namespace="production")
    check(operation="patch", patch_type="json", patch=[{"op": "replace", "path": "/spec/replicas", "value": 3}])
    check("", file_id="file-1")  # the manifests are in the file, read on the agent


@pytest.mark.parametrize(
    ("command", "params", "message"),
    [
        (DEPLOY, {"operation": "upsert"}, "params.operation: must be apply, create, update, delete or patch"),
        (DEPLOY, {"operation": "patch", "patch_type": "xml"}, "params.patch_type: must be strategic, merge or json"),
        (DEPLOY, {"namespace": "Not_Valid"}, "params.namespace: must be a namespace name"),
        (DEPLOY, {"operation": "patch", "patch_type": "json"}, "params.patch: the JSON Patch operations are required"),
        (
            DEPLOY,
            {"operation": "patch", "patch_type": "json", "patch": [{"op": "jump", "path": "/a"}]},
            r"params.patch\[0\].op",
        ),
        (
            DEPLOY,
            {"operation": "patch", "patch_type": "json", "patch": [{"op": "add", "path": "/a"}]},
            r"params.patch\[0\].value: is required",
        ),
        (
            DEPLOY,
            {"operation": "patch", "patch": [{"op": "add", "path": "/a", "value": 1}]},
            "params.patch: only used with patch_type json",
        ),
        (DEPLOY, {"force": "yes"}, "params.force: must be true or false"),
        (DEPLOY, {"operation": "create", "force": True}, "params.force: only used with operation apply, not create"),
        (DEPLOY, {"propagation_policy": "Background"}, "params.propagation_policy: only used with operation delete"),
        (
            DEPLOY,
            {"operation": "delete", "propagation_policy": "Later"},
            "params.propagation_policy: must be Foreground",
        ),
        (DEPLOY, {"operation": "delete", "wait": True}, "params.wait: waits for a rollout"),
        (DEPLOY, {"opration": "create"}, "params.opration: unknown field"),
        ("", {}, "command: the manifests .* are required"),
        ("---\n---\n", {}, "command: no Kubernetes object found"),
        ("kind: Pod\nmetadata: {name: p}\n", {}, "command: object 1: apiVersion is required"),
        (
            DEPLOY + "---\n" + DEPLOY,
            {"operation": "patch", "patch_type": "json", "patch": [{"op": "remove", "path": "/a"}]},
            "a JSON patch changes one object",
        ),
    ],
)
def test_mistakes_are_refused_naming_the_field(command: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check(command, **params)


def test_a_long_string_referenced_many_times_is_refused_at_post_time() -> None:
    bomb = "s: &s " + "x" * (3 * 1024 * 1024) + "\nl: [" + ", ".join(["*s"] * 200_000) + "]\n"
    with pytest.raises(ValueError, match="MiB of text once YAML aliases are expanded"):
        check(bomb)


def test_validate_does_not_import_the_kubernetes_client() -> None:
    code = (
        "import sys\n"
        "from executors.k8s import KubernetesExecutor\n"
        "from wire.tasks import TaskRequest\n"
        f"KubernetesExecutor().validate(TaskRequest(type='k8s', command={DEPLOY!r}))\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
