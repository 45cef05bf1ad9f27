"""Fleet limits (wire.fleet): what max_concurrency and max_errors accept, and the counts they mean."""

from __future__ import annotations

from typing import Any

import pytest

from wire.fleet import parse_limit, resolve_limit


@pytest.mark.parametrize(
    ("value", "minimum", "parsed"),
    [(3, 1, 3), ("3", 1, 3), (" 25% ", 1, "25%"), ("0%", 0, "0%"), (0, 0, 0), ("100%", 1, "100%")],
)
def test_counts_and_percentages_are_taken(value: Any, minimum: int, parsed: Any) -> None:
    assert parse_limit(value, minimum=minimum) == parsed


@pytest.mark.parametrize(
    ("value", "minimum"),
    [(0, 1), ("0%", 1), ("101%", 0), (-1, 0), ("-1", 0), (True, 0), (1.5, 1), ("ten", 1), ("5 %", 1), ([], 1)],
)
def test_anything_else_is_refused(value: Any, minimum: int) -> None:
    with pytest.raises(ValueError):
        parse_limit(value, minimum=minimum)


def test_a_percentage_of_concurrency_rounds_up_and_one_of_errors_down() -> None:
    assert resolve_limit("10%", 5, round_up=True) == 1  # half a target still starts one
    assert resolve_limit("1%", 1000, round_up=True) == 10
    assert resolve_limit("10%", 5, round_up=False) == 0  # half an error tolerates none
    assert resolve_limit("40%", 5, round_up=False) == 2
    assert resolve_limit(7, 5, round_up=True) == 7
