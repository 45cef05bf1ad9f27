"""Column types shared by the tables."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC as naive timestamps (SQLite keeps no zone) and hands back aware datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Clock:
    """The cloud's reading of the database's clock: this process's clock plus the offset last measured
    against the database (Database.sync_clock, every background pass). On SQLite the offset stays 0: the
    database file lives on this machine, under this clock."""

    def __init__(self) -> None:
        self.offset = 0.0
        """Seconds the database's clock is ahead of this process's."""
        self.system: Callable[[], float] = time.time
        """This process's own clock (a test swaps in a skewed one: the machine's clock cannot be changed)."""

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.system() + self.offset, UTC)


CLOCK = Clock()
"""One per process: every replica's leases and expiries follow the one database's clock."""


def utcnow() -> datetime:
    """The cloud's clock: every lease and expiry decision uses it (the database's clock, as this
    replica last measured it), never an agent's clock."""
    return CLOCK.now()
