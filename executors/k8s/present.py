"""How a k8s task's objects are shown: seed 004's `result` (the objects as JSON) and the log lines."""

from __future__ import annotations

import copy
import json
from typing import Any

from wire.secrets import MASK


def shown(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the result shows it: without managedFields (bookkeeping, as `kubectl get -o json` hides
    it) and with a Secret's values masked, since the result is stored and shown to every caller."""
    out = copy.deepcopy(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict) and out.get("kind") == "Secret":
            # client-side `kubectl apply` keeps the whole manifest, values included, in this annotation
            annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if is_secret(out):
        for field in ("data", "stringData"):
            if isinstance(out.get(field), dict):
                out[field] = dict.fromkeys(out[field], MASK)
    return out


def is_secret(obj: dict[str, Any]) -> bool:
    """A core Secret, whose `data` and `stringData` values are never shown."""
    return obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1"


def result_text(objects: list[dict[str, Any]]) -> str:
    """One object as itself; several as a `kind: List`, which kubectl reads back as it is."""
    if not objects:
        return ""
    value = objects[0] if len(objects) == 1 else {"apiVersion": "v1", "kind": "List", "items": objects}
    return json.dumps(value, indent=2, ensure_ascii=False)


def ref(kind: str, namespace: str, name: str) -> str:
    """`Deployment default/web`, or `Namespace prod` for a cluster-scoped kind."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
