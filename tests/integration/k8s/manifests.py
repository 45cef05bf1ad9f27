"""Manifests the k8s tests apply: small, valid on a real cluster, with images that start anywhere."""

from __future__ import annotations

import json
from typing import Any

import yaml

PAUSE = "registry.k8s.io/pause:3.9"
"""Starts in milliseconds and does nothing: rollouts on a real cluster finish quickly."""
BUSYBOX = "busybox:1.36"
NEVER_PULLS = "registry.invalid/none:1"
"""An image no node can pull: a rollout of it never becomes available (the fake plays the same)."""


def configmap(name: str, namespace: str | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def deployment(name: str, *, replicas: int = 1, image: str = PAUSE, sidecar: bool = False) -> dict[str, Any]:
    containers = [{"name": "main", "image": image}]
    if sidecar:
        containers.append({"name": "sidecar", "image": PAUSE})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}},
        },
    }


def workload(kind: str, name: str) -> dict[str, Any]:
    """A StatefulSet or DaemonSet of the pause image."""
    obj = deployment(name)
    obj["kind"] = kind
    if kind == "StatefulSet":
        obj["spec"]["serviceName"] = name
    else:
        del obj["spec"]["replicas"]
    return obj


def job(name: str, *, succeed: bool = True) -> dict[str, Any]:
    command = ["true"] if succeed else ["false"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": BUSYBOX, "command": command}],
                }
            },
        },
    }


def crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


def as_yaml(*objects: dict[str, Any]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


def as_json(obj: dict[str, Any]) -> str:
    return json.dumps(obj)
