"""The web shell's transcript: terminal output as the lines the screen showed."""

from __future__ import annotations

from executors.transcript import MAX_LINE_CHARS, Transcript, screen_line


def test_escapes_are_dropped_and_redraws_and_backspaces_applied() -> None:
    assert screen_line("\x1b[?2004h\x1b]0;root@vm: ~\x07root@vm:~# ls\r") == "root@vm:~# ls"
    assert screen_line("\x1b[01;34mdir\x1b[0m  file") == "dir  file"
    assert screen_line("50%\r75%\r100%") == "100%"  # a progress line redrawn in place
    assert screen_line("long line\rshort") == "shortline"  # written over from the start, as on screen
    assert screen_line("ech\bho hi") == "echo hi"  # a backspace moves left; what follows overwrites
    assert screen_line("abc\b\bX") == "aXc"
    assert screen_line("$ lss\b \b") == "$ ls "  # readline erasing a character
    assert screen_line("a\tb\x00\x07c") == "a\tbc"


def test_lines_split_across_reads_and_utf8_split_across_reads() -> None:
    lines: list[str] = []
    t = Transcript(lines.extend)
    data = "héllo\r\nwor".encode() + b"ld\r\n$ "
    for i in range(len(data)):  # one byte at a time: a character split in two still decodes whole
        t.feed(data[i : i + 1])
    assert lines == ["héllo", "world"]
    t.close()
    assert lines == ["héllo", "world", "$ "]


def test_a_line_without_newline_is_logged_in_pieces() -> None:
    lines: list[str] = []
    t = Transcript(lines.extend)
    t.feed(b"x" * (MAX_LINE_CHARS + 10))
    assert lines == ["x" * (MAX_LINE_CHARS + 10)]
    t.feed(b"y\n")
    assert lines[-1] == "y"
