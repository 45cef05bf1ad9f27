"""Output as it is kept: text made storable (no NUL) and cut to a byte budget around a marker line.

The agent keeps the first and last half of its budget (executors/capture.py); the cloud cuts what an
agent sends over the same budget the same way, so a result reads the same whichever side cut it.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"
"""What a NUL character becomes: PostgreSQL cannot store NUL in text."""


def storable(text: str) -> str:
    """`text` with every NUL character replaced by U+FFFD."""
    return text.replace("\x00", REPLACEMENT) if "\x00" in text else text


def utf8_len(text: str) -> int:
    """The size of `text` in UTF-8."""
    return len(text) if text.isascii() else len(text.encode("utf-8", errors="surrogatepass"))


def dropped_marker(dropped: int, kept: int) -> str:
    """The line that stands for `dropped` bytes between the first and last `kept` bytes."""
    return f"[tiangong: {dropped} bytes of output dropped; kept the first and last {kept} bytes]"


def cut_middle(text: str, limit: int) -> str:
    """`text` when it fits in `limit` bytes; else its first and last `limit // 2` bytes around a marker
    line (a character cut in two at either end is dropped)."""
    size = utf8_len(text)
    if size <= limit:
        return text
    half = max(0, limit // 2)
    raw = text.encode("utf-8", errors="surrogatepass")
    head = raw[:half].decode("utf-8", errors="ignore")
    tail = raw[len(raw) - half :].decode("utf-8", errors="ignore") if half else ""
    lead = "\n" if head and not head.endswith("\n") else ""
    return f"{head}{lead}{dropped_marker(size - 2 * half, half)}\n{tail}"
