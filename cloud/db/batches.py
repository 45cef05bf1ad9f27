"""Long id lists cut into bounded IN lists: every backend limits bound parameters (SQLite's default is
32,766, older builds 999), and a statement with thousands of them is slow to compile anyway."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

IN_BATCH = 500
"""Ids per IN list."""


def in_batches(ids: Iterable[T], size: int = IN_BATCH) -> Iterator[list[T]]:
    """`ids` in lists of at most `size`, in order."""
    items = list(ids)
    for start in range(0, len(items), size):
        yield items[start : start + size]
