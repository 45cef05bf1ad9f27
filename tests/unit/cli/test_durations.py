"""`--expires 30d` and friends."""

from __future__ import annotations

import pytest
import typer

from cli.admin_cmds import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-1d", "1.5h", "3 days", "10x"])
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="expected a duration"):
        parse_duration(text)
