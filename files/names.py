"""Cleaning the names uploaded files arrive with, and giving them back in a download's header."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

MAX_NAME_CHARS = 200
MAX_NAME_BYTES = 200
"""A name is kept within 200 characters and 200 bytes of UTF-8, so it still fits a file system's
255-byte name (the agent caches a file under its name) with the `file-<n>_` prefix a clash adds."""
_SEPARATORS = re.compile(r"[/\\]")
# The plain `filename` keeps letters, digits and a few marks: never a quote, a backslash, a `%` (some
# clients percent-decode it) or `;`, `*`, `=` (a naive parser must not find a parameter inside it).
_NOT_PLAIN = re.compile(r"[^A-Za-z0-9 ._+()\[\]@,-]")


def clean_name(raw: str | None) -> str:
    """A safe display name: the last path component, no `..`, no control characters, never empty.

    `../../etc/passwd` -> `passwd`; `C:\\dir\\a.sql` -> `a.sql`; `..` -> `file`; `部署.sql` stays.
    """
    name = _SEPARATORS.split(raw or "")[-1]
    # Control, format (bidi overrides), surrogate, private-use and unassigned characters; line and
    # paragraph separators.
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in "\u2028\u2029")
    name = name.replace("..", "").strip().lstrip(".").strip()
    return _shorten(name) or "file"


def _shorten(name: str) -> str:
    """Within MAX_NAME_CHARS and MAX_NAME_BYTES, keeping a short extension."""
    if len(name) <= MAX_NAME_CHARS and len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and len(ext) < 20:
        tail = dot + ext
        return _cut(stem, MAX_NAME_CHARS - len(tail), MAX_NAME_BYTES - len(tail.encode())) + tail
    return _cut(name, MAX_NAME_CHARS, MAX_NAME_BYTES)


def _cut(text: str, chars: int, nbytes: int) -> str:
    return text[:chars].encode()[:nbytes].decode("utf-8", "ignore").rstrip()


def ascii_fallback(name: str) -> str:
    """The name in plain ASCII for old clients: accents dropped, other characters as `_`; `部署.sql` ->
    `file.sql` when nothing of the stem is left."""
    decomposed = unicodedata.normalize("NFKD", name)
    text = _NOT_PLAIN.sub("_", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    if not any(ch.isalnum() for ch in stem):
        stem = "file"
    return stem + dot + ext


def content_disposition(name: str) -> str:
    """`attachment` with the name (RFC 6266): a plain `filename` when it is safe ASCII, else an ASCII
    fallback plus `filename*=UTF-8''...` (RFC 8187) carrying the real name."""
    fallback = ascii_fallback(name)
    if fallback == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='', errors='replace')}"
