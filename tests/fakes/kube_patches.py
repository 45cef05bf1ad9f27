"""Patch arithmetic for the FAKE Kubernetes API server: JSON merge patch (RFC 7386), a reduced strategic
merge patch, JSON Patch (RFC 6902) and the leaf paths server-side apply tracks ownership of.

Limits (the real API server does more): strategic merge knows merge keys only by field name (containers,
volumes, env... by `name`; ports by `containerPort` or `port`; volumeMounts by `mountPath`) and of the
directives only `$patch: delete` in list items; every other list is replaced.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
}


class PatchError(ValueError):
    """The patch cannot be applied to the document (a JSON Patch path that is not there, a failed test)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null removes a key, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """Like merge_patch, but lists of objects under a known field merge item by item on their key."""
    key = _merge_key(field, patch + target) if isinstance(patch, list) and isinstance(target, list) else None
    if key is not None:
        return _merge_list(target, patch, key)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = strategic_merge(out.get(key), value, key)
    return out


def _merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        return "containerPort" if any("containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


def _merge_list(target: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = copy.deepcopy(target)
    for item in patch:
        index = next((i for i, old in enumerate(out) if old.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append(copy.deepcopy(item))
        else:
            out[index] = strategic_merge(out[index], item)
    return out


def json_patch(doc: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test, applied in order to a copy of `doc`."""
    doc = copy.deepcopy(doc)
    for op in operations:
        name, path = op.get("op"), op.get("path", "")
        if name == "add":
            doc = _put(doc, path, copy.deepcopy(op["value"]), insert=True)
        elif name == "remove":
            doc = _remove(doc, path)[0]
        elif name == "replace":
            _get(doc, path)  # must exist
            doc = _put(doc, path, copy.deepcopy(op["value"]), insert=False)
        elif name == "move":
            doc, value = _remove(doc, op["from"])
            doc = _put(doc, path, value, insert=True)
        elif name == "copy":
            doc = _put(doc, path, copy.deepcopy(_get(doc, op["from"])), insert=True)
        elif name == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"test failed at {path}")
        else:
            raise PatchError(f"unknown operation {name!r}")
    return doc


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"{path!r} is not a JSON Pointer")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container: list[Any], token: str, *, append: bool) -> int:
    if append and token == "-":
        return len(container)
    if not token.isdigit() or int(token) > len(container) - (0 if append else 1):
        raise PatchError(f"index {token!r} out of range")
    return int(token)


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    tokens = _tokens(path)
    node = doc
    for token in tokens[:-1]:
        node = _step(node, token)
    return node, tokens[-1]


def _step(node: Any, token: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, append=False)]
    raise PatchError(f"path segment {token!r} not found")


def _get(doc: Any, path: str) -> Any:
    node = doc
    for token in _tokens(path):
        node = _step(node, token)
    return node


def _put(doc: Any, path: str, value: Any, *, insert: bool) -> Any:
    if path == "":
        return value
    parent, last = _parent(doc, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        at = _index(parent, last, append=insert)
        if insert:
            parent.insert(at, value)
        else:
            parent[at] = value
    else:
        raise PatchError(f"cannot add below a scalar at {path}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parent, last = _parent(doc, path)
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, append=False))
    raise PatchError(f"nothing to remove at {path}")


def leaf_paths(obj: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """`{("spec", "replicas"): 3, ...}`: every leaf of a map; lists count as one leaf (atomic in the fake)."""
    if not isinstance(obj, dict) or not obj:
        return {prefix: obj}
    out: dict[tuple[str, ...], Any] = {}
    for key, value in obj.items():
        out.update(leaf_paths(value, (*prefix, key)))
    return out


def remove_path(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    """Remove the leaf at `path`, and the maps it leaves empty."""
    trail = [obj]
    for key in path[:-1]:
        nxt = trail[-1].get(key)
        if not isinstance(nxt, dict):
            return
        trail.append(nxt)
    trail[-1].pop(path[-1], None)
    for parent, key in zip(reversed(trail[:-1]), reversed(path[:-1]), strict=True):
        if parent.get(key) == {}:
            del parent[key]
