"""A terminal's output as log lines: what the screen showed, line by line, without escape sequences.

Only output is kept. Typed characters appear as the terminal echoes them, so a password typed at a prompt
that turns echo off (sudo, ssh, `read -s`) is never in the transcript; everything else on the screen is.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable

_ESCAPES = re.compile(
    r"\x1b\][^\x07\x1b]*+(?:\x07|\x1b\\)?"  # OSC (window title...), ended by BEL or ST
    r"|\x1b\[[0-?]*+[ -/]*+[@-~]"  # CSI (colours, cursor moves, erase)
    r"|\x1b[PX^_][^\x1b]*+(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*+[0-~]"  # two-character escapes (charset selection, keypad mode)
    r"|\x1b"
)
_CONTROLS = re.compile(r"[\x00-\x07\x0b\x0c\x0e-\x1f\x7f]")  # all but \b and \r (applied), \t and \n (kept)
MAX_LINE_CHARS = 64 * 1024
"""A longer line without a newline (a progress bar redrawn with \\r) is logged in pieces of this size."""


class Transcript:
    """Feed it the terminal's bytes; it calls `emit` with the lines each feed finished (logged together,
    as the process types log a read's lines: RunContext.log_lines)."""

    def __init__(self, emit: Callable[[list[str]], None]) -> None:
        self._emit = emit
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # text of the line not ended yet (may end inside an escape sequence)

    def feed(self, data: bytes) -> None:
        text = self._pending + self._decoder.decode(data)
        *lines, self._pending = text.split("\n")
        if len(self._pending) > MAX_LINE_CHARS:
            lines.append(self._pending)
            self._pending = ""
        if lines:
            self._emit([screen_line(line) for line in lines])

    def close(self) -> None:
        """Log the last line, if it did not end with a newline (the prompt the session ended at)."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest.strip():
            self._emit([screen_line(rest)])


def screen_line(raw: str) -> str:
    """One line as the screen showed it: escapes dropped, then written cell by cell as a terminal does (a
    carriage return goes back to the start and a backspace one cell left, and what follows overwrites)."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", raw.removesuffix("\r")))
    if "\r" not in text and "\b" not in text:
        return text
    cells: list[str] = []
    at = 0
    for ch in text:
        if ch == "\r":
            at = 0
        elif ch == "\b":
            at = max(0, at - 1)
        else:
            cells[at : at + 1] = ch
            at += 1
    return "".join(cells)
