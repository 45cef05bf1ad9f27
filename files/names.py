"""Cleaning the names uploaded files arrive with."""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_CHARS = 200
_SEPARATORS = re.compile(r"[/\\]")


def clean_name(raw: str | None) -> str:
    """A safe display name: the last path component, no `..`, no control characters, never empty.

    `../../etc/passwd` -> `passwd`; `C:\\dir\\a.sql` -> `a.sql`; `..` -> `file`.
    """
    name = _SEPARATORS.split(raw or "")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")  # control, format, unassigned
    name = name.replace("..", "").strip().lstrip(".").strip()
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_NAME_CHARS - len(ext) - 1] + dot + ext) if dot and len(ext) < 20 else name[:MAX_NAME_CHARS]
    return name or "file"
