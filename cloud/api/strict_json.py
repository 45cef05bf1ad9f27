"""Strict JSON for request bodies: valid UTF-8 only, bounded nesting, no NUL characters.

orjson refuses what the standard library lets through and a database cannot store or a response
cannot encode: invalid UTF-8, lone surrogates (`"\\udfff"`), NaN. Nesting is bounded because a deep
document costs recursion in every later serializer (pydantic gives up near 255 levels, after the row
is stored). A caller's bad document is refused; an agent's is made storable instead, since refusing it
would leave the agent resending a result it cannot change.
"""

from __future__ import annotations

from typing import Any

import orjson

OFFLOAD_BYTES = 256 * 1024
"""Bodies larger than this are parsed in a worker thread, so a big document never stalls the event loop."""
REPLACEMENT = "\ufffd"
CUT = "<cut: nested deeper than {depth} levels>"


class JsonRefused(ValueError):
    """The body cannot be accepted; the message names the field."""


def loads(body: bytes | str) -> Any:
    """Parse strictly; JsonRefused with orjson's reason."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JsonRefused(f"body: invalid JSON ({exc})") from None


def loads_checked(body: bytes | str, max_depth: int) -> Any:
    """Parse strictly and refuse (JsonRefused naming the field) a document too deep or holding a NUL."""
    value = loads(body)
    problem = find_problem(value, max_depth)
    if problem:
        raise JsonRefused(problem)
    return value


def loads_storable(body: bytes, max_depth: int) -> Any:
    """Parse strictly, as an agent's body is: a document too deep or holding a NUL is made storable, not
    refused."""
    value = loads(body)
    if b"\\u0000" not in body and body.count(b"{") + body.count(b"[") <= max_depth:
        # No escaped NUL, and too few brackets to nest past max_depth: nothing to walk for (most bodies).
        return value
    return make_storable(value, max_depth) if find_problem(value, max_depth) else value


def _path(parts: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in parts) or "body"


def find_problem(value: Any, max_depth: int) -> str | None:
    """A description naming the first field nested too deep or holding a NUL character, else None.

    Iterative, so a document nested as deep as orjson allows (1024) cannot exhaust Python's stack."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return f"{_path(path)}: contains a NUL character (\\u0000), which cannot be stored"
            continue
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        if len(path) >= max_depth:
            return f"{_path(path)}: nested deeper than {max_depth} levels"
        for key, child in items:
            if isinstance(key, str) and "\x00" in key:
                return f"{_path(path)}: a key contains a NUL character (\\u0000), which cannot be stored"
            if isinstance(child, str | dict | list):
                stack.append((child, (*path, key)))
    return None


def make_storable(value: Any, max_depth: int, depth: int = 0) -> Any:
    """A copy with NUL characters replaced by U+FFFD and anything nested deeper than `max_depth` replaced
    by a marker string. Callers check `find_problem` first, so the common clean document is not copied."""
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT)
    if isinstance(value, dict | list) and depth >= max_depth:
        return CUT.format(depth=max_depth)
    if isinstance(value, dict):
        return {
            (k.replace("\x00", REPLACEMENT) if isinstance(k, str) else k): make_storable(v, max_depth, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [make_storable(v, max_depth, depth + 1) for v in value]
    return value
