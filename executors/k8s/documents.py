"""Reading the manifests of a `k8s` task: JSON or YAML (detected), several documents, read safely.

Safe means: only plain YAML types (no `!!python/...` or other tags that build objects), duplicate keys
refused (YAML would silently keep the last one, e.g. a second `image:`), dates kept as the strings
Kubernetes expects, and a size cap on the text plus a node budget on the loaded documents so an alias
bomb ("billion laughs": a few hundred bytes expanding to billions of nodes) is refused before it is
ever expanded into JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import yaml

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Largest manifest text accepted (the API server's own limit is about 1.5 MiB per object)."""
MAX_NODES = 1_000_000
"""Most values (maps, lists, scalars) all documents may hold once aliases are expanded."""
MAX_DEPTH = 200
"""Deepest nesting accepted; CRD schemas are the deepest real manifests and stay far below this."""

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when PyYAML has it
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class ManifestError(ValueError):
    """The manifests cannot be used; the message says where (document number, field) and why."""


class _StrictLoader(_Loader):
    """The safe loader, refusing duplicate keys and keeping timestamps as strings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` keys may be overridden by explicit ones, as YAML intends
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it with its position
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# Kubernetes reads `2024-01-01` as the string it looks like; PyYAML would build a datetime.date.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def parse_manifests(text: str) -> list[dict[str, Any]]:
    """The objects in `text` in order: JSON (an object or an array of objects) or YAML documents
    separated by `---`; empty documents are skipped and `kind: List` is unpacked into its items."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"command: manifests larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB are refused")
    documents = _load_json(text) if text.lstrip()[:1] in ("{", "[") else _load_yaml(text)
    _check_budget(documents)
    objects: list[dict[str, Any]] = []
    for number, doc in enumerate(documents, 1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"command: document {number}: expected a Kubernetes object (a mapping)")
        objects.extend(_unpack(doc, number))
    return objects


def _load_json(text: str) -> list[Any]:
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"command: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ManifestError("command: the JSON is nested too deeply") from None
    return value if isinstance(value, list) else [value]


def _no_duplicate_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"command: not valid JSON: duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ManifestError(f"command: not valid JSON: {name} is not a JSON number")


def _load_yaml(text: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1} column {exc.problem_mark.column + 1}" if exc.problem_mark else ""
        raise ManifestError(f"command: not valid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"command: not valid YAML: {exc}") from None
    except RecursionError:
        raise ManifestError("command: the YAML is nested too deeply") from None


def _check_budget(documents: list[Any]) -> None:
    """Count values as if aliases were expanded, without expanding them: each distinct map or list is
    measured once (its size and depth memoised by identity), so a bomb is caught in time linear in the
    text. A recursive alias (`&a [*a]`) is refused."""
    total = 0
    memo: dict[int, tuple[int, int]] = {}
    for doc in documents:
        total += _measure(doc, memo)[0]
        if total > MAX_NODES:
            raise ManifestError(
                f"command: more than {MAX_NODES} values once YAML aliases are expanded (an alias bomb?)"
            )


def _measure(root: Any, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, depth) of `root`; checks every scalar and key once. Iterative: no recursion limit."""
    if not isinstance(root, dict | list):
        _check_scalar(root)
        return 1, 1
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        value, children_done = stack.pop()
        key = id(value)
        children = list(value.values()) if isinstance(value, dict) else value
        if children_done:
            size, depth = 1, 1
            for child in children:
                child_size, child_depth = memo[id(child)] if isinstance(child, dict | list) else (1, 1)
                size, depth = size + child_size, max(depth, child_depth + 1)
            if size > MAX_NODES:
                raise ManifestError(
                    f"command: more than {MAX_NODES} values once YAML aliases are expanded (an alias bomb?)"
                )
            if depth > MAX_DEPTH:
                raise ManifestError(f"command: nested deeper than {MAX_DEPTH} levels")
            memo[key] = (size, depth)
            active.discard(key)
            continue
        if key in memo:
            continue
        if key in active:
            raise ManifestError("command: a YAML alias refers to itself (a recursive structure)")
        active.add(key)
        stack.append((value, True))
        if isinstance(value, dict):
            for k in value:
                if not isinstance(k, str):
                    raise ManifestError(f"command: map keys must be strings, got {k!r} (quote it)")
        for child in children:
            if isinstance(child, dict | list):
                if id(child) not in memo:
                    stack.append((child, False))
            else:
                _check_scalar(child)
    return memo[id(root)]


def _check_scalar(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ManifestError(f"command: {value} is not a number Kubernetes accepts")
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ManifestError(f"command: unsupported YAML value of type {type(value).__name__} (e.g. !!binary)")


def _unpack(doc: dict[str, Any], number: int) -> Iterator[dict[str, Any]]:
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc["items"]
        if not isinstance(items, list):
            raise ManifestError(f"command: document {number}: items must be a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ManifestError(f"command: document {number}: items[{i}] must be a Kubernetes object")
            yield item
    else:
        yield doc


def check_object(obj: dict[str, Any], number: int, *, named: bool = True) -> None:
    """apiVersion, kind and metadata.name (or generateName when `named` is False) must be there."""
    where = f"command: object {number}"
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field].strip():
            raise ManifestError(f"{where}: {field} is required")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise ManifestError(f"{where} ({obj['kind']}): metadata is required")
    name = meta.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ManifestError(f"{where} ({obj['kind']}): metadata.name must be a non-empty string")
    if name is None and (named or not isinstance(meta.get("generateName"), str)):
        needed = "metadata.name" if named else "metadata.name or metadata.generateName"
        raise ManifestError(f"{where} ({obj['kind']}): {needed} is required")
    namespace = meta.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise ManifestError(f"{where} ({obj['kind']}): metadata.namespace must be a non-empty string")
