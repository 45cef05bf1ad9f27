"""Bounded output capture: keep the first and last half of a byte budget, count what falls between."""

from __future__ import annotations

from collections import deque
from typing import Any

from wire.output import dropped_marker, storable


def _utf8_len(text: str) -> int:
    # ASCII (most output) needs no encoding to be measured: this runs twice per line of output.
    return len(text) if text.isascii() else len(text.encode("utf-8", errors="surrogatepass"))


def _last_bytes(text: str, budget: int) -> str:
    """The longest suffix of `text` whose UTF-8 encoding fits in `budget` bytes."""
    if budget <= 0:
        return ""
    raw = text.encode("utf-8", errors="surrogatepass")[-budget:]
    # The cut may land inside a multi-byte character; drop its orphaned continuation bytes.
    return raw.decode("utf-8", errors="ignore")


class HeadTail:
    """Keeps the first and last `limit // 2` bytes (UTF-8) of a stream of lines."""

    def __init__(self, limit: int) -> None:
        self.half = max(0, limit // 2)
        self._head: list[str] = []
        self._head_bytes = 0
        self._head_open = True
        self._tail: deque[tuple[str, int, Any]] = deque()
        self._tail_bytes = 0
        self._dropped = 0

    @property
    def dropped_bytes(self) -> int:
        """Bytes neither in the head nor in the tail."""
        return self._dropped

    def add(self, line: str, tag: Any = None) -> str | None:
        """Return `line` when it belongs to the head (emit it now); otherwise hold it in the tail.

        `tag` travels with a held line (the agent keeps each line's stream in it). A NUL character
        becomes U+FFFD, as the cloud would store it."""
        line = storable(line)
        size = _utf8_len(line)
        if self._head_open and self._head_bytes + size <= self.half:
            self._head.append(line)
            self._head_bytes += size
            return line
        # Once one line misses the head, later (smaller) ones must not jump ahead of it.
        self._head_open = False
        self._hold(line, size, tag)
        return None

    def _hold(self, line: str, size: int, tag: Any) -> None:
        if size > self.half:
            # The line alone overflows the tail: everything held before it is now in the gap.
            self._dropped += self._tail_bytes
            self._tail.clear()
            self._tail_bytes = 0
            line = _last_bytes(line, self.half)
            kept = _utf8_len(line)
            self._dropped += size - kept
            size = kept
            if not line:
                return
        self._tail.append((line, size, tag))
        self._tail_bytes += size
        while self._tail_bytes > self.half:
            _, old, _ = self._tail.popleft()
            self._tail_bytes -= old
            self._dropped += old

    def marker(self) -> str:
        """The line that stands for the dropped bytes."""
        return dropped_marker(self._dropped, self.half)

    def finish(self) -> list[str]:
        """The held tail lines, preceded by one marker line when anything was dropped."""
        return [line for line, _ in self.finish_tagged()]

    def finish_tagged(self) -> list[tuple[str, Any]]:
        """Like finish(), with each held line's tag (None for the marker)."""
        lines = [(line, tag) for line, _, tag in self._tail]
        return [(self.marker(), None), *lines] if self._dropped else lines

    def text(self) -> str:
        """Head and tail joined as added; the marker, if any, on a line of its own."""
        head = "".join(self._head)
        tail = "".join(line for line, _, _ in self._tail)
        if not self._dropped:
            return head + tail
        lead = "\n" if head and not head.endswith("\n") else ""
        return f"{head}{lead}{self.marker()}\n{tail}"
