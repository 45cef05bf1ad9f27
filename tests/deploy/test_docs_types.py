"""docs/api.md names every task type the registry knows, so a new type cannot ship undocumented."""

from __future__ import annotations

import re
from pathlib import Path

from executors.registry import known_types

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_type_row_of_docs_api_lists_every_registered_type() -> None:
    row = next(ln for ln in API_MD.read_text(encoding="utf-8").splitlines() if ln.startswith("| `type` |"))
    documented = set(re.findall(r"`([a-z0-9_]+)`", row)) - {"type"}
    assert set(known_types()) <= documented, sorted(set(known_types()) - documented)
