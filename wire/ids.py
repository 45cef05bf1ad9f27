"""Public ids: `<kind>-<n>` over the database's integer sequence."""

from __future__ import annotations


def parse_numbered(value: str, prefix: str) -> int | None:
    """Accept `<prefix>12` or `12`; None for anything else (ASCII digits only, fits a BIGINT)."""
    raw = value.removeprefix(prefix)
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
