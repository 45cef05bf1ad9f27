"""HeadTail keeps the first and last half of a byte budget and says how much it dropped."""

from __future__ import annotations

from executors.capture import HeadTail


def _feed(cap: HeadTail, lines: list[str]) -> list[str]:
    """Add every line; return the ones the caller would emit at once (the head)."""
    return [line for line in lines if cap.add(line) is not None]


def test_everything_within_the_budget_is_head_and_nothing_is_dropped() -> None:
    cap = HeadTail(100)
    lines = ["a\n", "bb\n", "ccc\n"]
    assert _feed(cap, lines) == lines
    assert cap.dropped_bytes == 0
    assert cap.finish() == []
    assert cap.text() == "a\nbb\nccc\n"


def test_over_the_budget_keeps_head_and_tail_with_one_marker() -> None:
    cap = HeadTail(100)  # 50 bytes each side; every line is 9 bytes
    lines = [f"line-{i:03d}\n" for i in range(100)]
    head = _feed(cap, lines)
    assert head == lines[:5]
    assert cap.dropped_bytes == 900 - 90
    marker = "[tiangong: 810 bytes of output dropped; kept the first and last 50 bytes]"
    assert cap.finish() == [marker, *lines[-5:]]
    assert cap.text() == "".join(lines[:5]) + marker + "\n" + "".join(lines[-5:])


def test_the_marker_has_the_documented_form_for_the_default_cap() -> None:
    cap = HeadTail(10 * 1024 * 1024)
    cap.add("x" * (5 * 1024 * 1024))
    cap.add("y" * 12345)
    cap.add("z" * (5 * 1024 * 1024))
    assert cap.finish()[0] == ("[tiangong: 12345 bytes of output dropped; kept the first and last 5242880 bytes]")


def test_bytes_are_counted_in_utf8_not_characters() -> None:
    cap = HeadTail(8)  # 4 bytes each side
    assert cap.add("é\n") == "é\n"  # 3 bytes
    assert cap.add("é\n") is None  # would make 6 > 4
    assert cap.dropped_bytes == 0
    cap.add("ab\n")  # tail 6 bytes > 4: the older line goes
    assert cap.dropped_bytes == 3
    assert cap.finish()[1:] == ["ab\n"]


def test_a_line_larger_than_the_budget_is_cut_to_its_end() -> None:
    cap = HeadTail(20)  # 10 bytes each side
    cap.add("head\n")
    assert cap.add("held-it\n") is None  # 5 + 8 > 10: held in the tail
    assert cap.add("0123456789abcdef\n") is None
    # The held line and the first 7 bytes of the long one are dropped; its last 10 bytes are kept.
    assert cap.dropped_bytes == 8 + 7
    assert cap.finish()[1:] == ["789abcdef\n"]
    assert cap.text().startswith("head\n[tiangong: 15 bytes")


def test_a_cut_never_leaves_half_a_character() -> None:
    cap = HeadTail(10)  # 5 bytes each side
    cap.add("x" * 6)  # closes the head
    cap.add("ééé")  # 6 bytes: keeping 5 would split the first é
    tail = cap.finish()[1:]
    assert tail == ["éé"]
    assert cap.dropped_bytes == 6 + 2


def test_once_the_head_is_closed_smaller_lines_do_not_jump_into_it() -> None:
    cap = HeadTail(20)
    assert cap.add("12345678901\n") is None  # 12 bytes > 10: the head closes
    assert cap.add("a\n") is None
    assert cap.text().endswith("a\n")


def test_text_puts_the_marker_on_its_own_line_after_a_head_without_newline() -> None:
    cap = HeadTail(10)
    cap.add("abc")
    cap.add("0123456789")
    assert cap.text().startswith("abc\n[tiangong: ")


def test_a_zero_budget_keeps_nothing_and_counts_everything() -> None:
    cap = HeadTail(0)
    assert cap.add("abc\n") is None
    assert cap.dropped_bytes == 4
    assert cap.finish() == ["[tiangong: 4 bytes of output dropped; kept the first and last 0 bytes]"]
