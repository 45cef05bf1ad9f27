"""Reading the manifests of a `k8s` task: JSON or YAML (detected), several documents, read safely.

Safe means: only plain YAML types (no `!!python/...` or other tags that build objects), duplicate keys
refused (YAML would silently keep the last one, e.g. a second `image:`), dates kept as the strings
Kubernetes expects, and a size cap on the text plus a budget of values and of bytes on the loaded
documents, so an alias bomb ("billion laughs": a few hundred bytes expanding to billions of nodes, or one
long string referenced a hundred thousand times) is refused before it is ever expanded into JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import yaml

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Largest manifest text accepted (the API server's own limit is about 1.5 MiB per object)."""
MAX_NODES = 1_000_000
"""Most values (maps, lists, scalars) all documents may hold once aliases are expanded."""
MAX_EXPANDED_BYTES = 4 * MAX_MANIFEST_BYTES
"""Most text (strings, keys) all documents may hold once aliases are expanded: reusing a block through an
alias is fine, one long string referenced a hundred thousand times (hundreds of GiB as JSON) is not."""
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
    documents = _load(text)
    _check_budget(documents)
    objects: list[dict[str, Any]] = []
    for number, doc in enumerate(documents, 1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"command: document {number}: expected a Kubernetes object (a mapping)")
        objects.extend(_unpack(doc, number))
    return objects


class _NotJson(ManifestError):
    """The text is not JSON syntax (as opposed to JSON read and refused, e.g. for a duplicate key)."""


def _load(text: str) -> list[Any]:
    """JSON when the text looks like it, else YAML. Text that starts like JSON but does not parse as JSON
    is tried as YAML, of which JSON is the flow style: JSON documents separated by `---`, or
    `{kind: ConfigMap, ...}` without quotes. When that fails too, the JSON error is the one shown: the
    author most likely meant JSON, and the YAML parser's view of broken JSON is harder to read."""
    if text.lstrip()[:1] not in ("{", "["):
        return _load_yaml(text)
    try:
        return _load_json(text)
    except _NotJson as json_error:
        try:
            documents = _load_yaml(text)
        except ManifestError:
            raise json_error from None
    # A flow list of objects means what the JSON array it looks like means: the objects, in order.
    return documents[0] if len(documents) == 1 and isinstance(documents[0], list) else documents


def _load_json(text: str) -> list[Any]:
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _NotJson(f"command: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
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
    """Measure values and bytes as if aliases were expanded, without expanding them: each distinct map
    or list is measured once (memoised by identity), so a bomb is caught in time linear in the text,
    whether it repeats many small values or one long string. A recursive alias (`&a [*a]`) is refused."""
    total = _Size(0, 0, 0)
    memo: dict[int, _Size] = {}
    for doc in documents:
        size = _measure(doc, memo)
        total = _Size(total.values + size.values, total.chars + size.chars, 0)
        _check_size(total)


class _Size(NamedTuple):
    values: int
    """Maps, lists and scalars."""
    chars: int
    """Bytes of text: strings (map keys too) in UTF-8, one per other scalar."""
    depth: int


def _check_size(size: _Size) -> None:
    if size.values > MAX_NODES:
        raise ManifestError(f"command: more than {MAX_NODES} values once YAML aliases are expanded (an alias bomb?)")
    if size.chars > MAX_EXPANDED_BYTES:
        raise ManifestError(
            f"command: more than {MAX_EXPANDED_BYTES // (1024 * 1024)} MiB of text once YAML aliases are "
            "expanded (an alias bomb?)"
        )
    if size.depth > MAX_DEPTH:
        raise ManifestError(f"command: nested deeper than {MAX_DEPTH} levels")


def _measure(root: Any, memo: dict[int, _Size]) -> _Size:
    """The expanded size of `root`; checks every scalar and key once. Iterative: no recursion limit."""
    if not isinstance(root, dict | list):
        return _Size(1, _scalar_bytes(root), 1)
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        value, children_done = stack.pop()
        key = id(value)
        if children_done:
            memo[key] = _total(value, memo)
            active.discard(key)
            continue
        if key in memo:
            continue
        if key in active:
            raise ManifestError("command: a YAML alias refers to itself (a recursive structure)")
        active.add(key)
        stack.append((value, True))
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list) and id(child) not in memo:
                stack.append((child, False))
    return memo[id(root)]


def _total(value: dict[str, Any] | list[Any], memo: dict[int, _Size]) -> _Size:
    """The size of a map or list whose children are measured (in `memo`, or scalars)."""
    values, chars, depth = 1, 0, 1
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise ManifestError(f"command: map keys must be strings, got {k!r} (quote it)")
            chars += _text_bytes(k)
        children: Any = value.values()
    else:
        children = value
    for child in children:
        if isinstance(child, dict | list):
            size = memo[id(child)]
            values, chars, depth = values + size.values, chars + size.chars, max(depth, size.depth + 1)
        else:  # an alias to a string is the same str object: its length is counted at every use
            values, chars = values + 1, chars + _scalar_bytes(child)
    size = _Size(values, chars, depth)
    _check_size(size)
    return size


def _scalar_bytes(value: Any) -> int:
    _check_scalar(value)
    return _text_bytes(value) if isinstance(value, str) else 1


def _text_bytes(text: str) -> int:
    # isascii() is O(1) on CPython's compact strings: most manifests never pay for an encode.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


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
