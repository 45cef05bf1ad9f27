"""How JSON columns are written and read: strictly on the way in, forgivingly on the way out.

orjson refuses to write what cannot be read back (lone surrogates), and reads fast. A row written
before input was checked strictly may hold a lone surrogate (`"\\udfff"`) in a JSON column: it is read
with the standard library and the surrogate becomes U+FFFD, so that row stays readable instead of
failing every response that includes it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """JSON text for a column; raises for what could not be read back."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def loads(text: str | bytes) -> Any:
    """The column's value; a lone surrogate in an old row comes back as U+FFFD."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _repair(json.loads(text))


def _repair(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_repair(k): _repair(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_repair(v) for v in value]
    return value
