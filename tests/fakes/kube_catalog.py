"""What the FAKE Kubernetes API server knows about kinds: the built-in resource types it serves, CRDs,
the few validation rules it enforces (422 Invalid) and how it pretends controllers roll workloads out.

Rollouts, as the fake plays them (counted in reads of the object, since the fake has no controllers):
the first read after a change shows the new generation not yet observed; then one more replica is
updated per read and becomes available a read later. Images on `registry.invalid` never become
available (as a real cluster would leave them in ImagePullBackOff). A Job completes on its third read,
or fails there when its container's command is `["false"]`. A DaemonSet runs on two fake nodes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the API and how discovery describes it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    custom: bool = False
    """Defined by a CRD: the API refuses strategic merge patches for it."""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> dict[str, Any]:
        entry = {
            "name": self.plural,
            "singularName": self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry


BUILTIN = [
    ResourceType("", "v1", "Namespace", "namespaces", False, ("ns",)),
    ResourceType("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    ResourceType("", "v1", "Secret", "secrets", True),
    ResourceType("", "v1", "Pod", "pods", True, ("po",)),
    ResourceType("", "v1", "Service", "services", True, ("svc",)),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    ResourceType("apps", "v1", "Deployment", "deployments", True, ("deploy",)),
    ResourceType("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",)),
    ResourceType("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",)),
    ResourceType("batch", "v1", "Job", "jobs", True),
    # Kinds the agent's Role covers; the fake stores them but validates and simulates nothing for them.
    ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",)),
    ResourceType("batch", "v1", "CronJob", "cronjobs", True, ("cj",)),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",)),
    ResourceType("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    ResourceType("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ("hpa",)),
    ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    ResourceType(
        "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False, ("crd",)
    ),
]


def group_list(types: Iterable[ResourceType]) -> dict[str, Any]:
    """GET /apis: the named groups and their versions (the first one preferred)."""
    groups: dict[str, list[str]] = {}
    for rt in types:
        if rt.group and rt.version not in groups.setdefault(rt.group, []):
            groups[rt.group].append(rt.version)
    listed = []
    for group, versions in sorted(groups.items()):
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        listed.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}


def resource_list(types: Iterable[ResourceType], group: str, version: str) -> dict[str, Any]:
    """GET /api/v1 or /apis/<group>/<version>: the resources served there."""
    served = sorted((rt for rt in types if (rt.group, rt.version) == (group, version)), key=lambda rt: rt.plural)
    if not served:
        raise LookupError(f"{group}/{version}")
    resources = [rt.discovery() for rt in served]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": served[0].group_version,
        "resources": resources,
    }


def crd_manifest(group: str, kind: str, plural: str, *, namespaced: bool = True) -> dict[str, Any]:
    """A minimal but valid apiextensions.k8s.io/v1 CRD with one served version, v1."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CRD serves."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    return [
        ResourceType(
            spec["group"],
            v["name"],
            names["kind"],
            names["plural"],
            spec.get("scope", "Namespaced") == "Namespaced",
            tuple(names.get("shortNames") or ()),
            custom=True,
        )
        for v in spec.get("versions") or []
        if v.get("served", True)
    ]


def invalid_causes(rt: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
    """The 422 causes for `obj`: a bad name, no containers, a container without name or image."""
    causes = []
    name = (obj.get("metadata") or {}).get("name", "")
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        causes.append(
            _cause("FieldValueInvalid", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain', "metadata.name")
        )
    pod_spec = {"Pod": ("spec",), "Job": ("spec", "template", "spec")}.get(rt.kind)
    if rt.kind in ("Deployment", "StatefulSet", "DaemonSet"):
        pod_spec = ("spec", "template", "spec")
        if not (obj.get("spec") or {}).get("selector"):
            causes.append(_cause("FieldValueRequired", "Required value", "spec.selector"))
    if pod_spec is None or rt.group not in ("", "apps", "batch"):
        return causes
    spec: Any = obj
    for key in pod_spec:
        spec = (spec or {}).get(key) if isinstance(spec, dict) else None
    containers = (spec or {}).get("containers") if isinstance(spec, dict) else None
    where = ".".join(pod_spec)
    if not containers:
        causes.append(_cause("FieldValueRequired", "Required value", f"{where}.containers"))
    for i, container in enumerate(containers or []):
        for field in ("name", "image"):
            if not container.get(field):
                causes.append(_cause("FieldValueRequired", "Required value", f"{where}.containers[{i}].{field}"))
    return causes


def _cause(reason: str, message: str, field: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def simulated_status(obj: dict[str, Any], reads: int) -> dict[str, Any] | None:
    """The status a workload shows on its `reads`-th read since its last change (None: not a workload)."""
    kind, spec, meta = obj.get("kind"), obj.get("spec") or {}, obj.get("metadata") or {}
    if kind not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return None
    generation = int(meta.get("generation") or 1)
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    stalled = any("registry.invalid" in str(c.get("image", "")) for c in containers)
    if kind == "Job":
        if reads < 3:
            return {"active": 1}
        if any(c.get("command") == ["false"] for c in containers):
            failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
            return {"failed": 1, "conditions": [{**failed, "message": "Job has reached the specified backoff limit"}]}
        return {"succeeded": spec.get("completions", 1), "conditions": [{"type": "Complete", "status": "True"}]}
    if reads < 2:
        return {"observedGeneration": generation - 1}
    steps = reads - 1
    wanted = 2 if kind == "DaemonSet" else int(spec.get("replicas", 1))
    updated, ready = min(wanted, steps), 0 if stalled else min(wanted, steps - 1)
    if kind == "DaemonSet":
        return {
            "observedGeneration": generation,
            "desiredNumberScheduled": wanted,
            "updatedNumberScheduled": updated,
            "numberAvailable": ready,
        }
    status: dict[str, Any] = {"observedGeneration": generation, "replicas": updated, "updatedReplicas": updated}
    status |= {"readyReplicas": ready, "availableReplicas": ready}
    if kind == "StatefulSet":
        revision = f"{meta.get('name')}-{generation}"
        status |= {"updateRevision": revision, "currentRevision": revision if ready == wanted else "previous"}
    return status
