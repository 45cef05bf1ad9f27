"""In-process wake-ups: long-polls wait on keys, state changes publish them. No polling loop.

Keys: `agent:<id>` (a task is pending for the agent), `cancel:<agent id>` (a cancel was requested),
`task:<n>` (task n reached a final status), `logs:<n>` (task n got log lines or ended).
Subscribe before reading the database, then wait: a publish between the read and the wait is kept.
A publish may carry a payload (the task's final row) so a waiter need not read it back; waiters must
still work without one (another replica's wake-up carries none).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any


class Subscription:
    """A waiter on one or more keys; usable as a context manager and in a loop."""

    def __init__(self, hub: Hub, keys: tuple[str, ...]) -> None:
        self._hub = hub
        self.keys = keys
        self._event = asyncio.Event()
        self.payload: Any = None
        self.wakes = 0
        """Publishes so far: a waiter can tell whether a wake-up it slept through was the only one."""

    def _wake(self, payload: Any = None) -> None:
        if payload is not None:
            self.payload = payload
        self.wakes += 1
        self._event.set()

    @property
    def pending(self) -> bool:
        """A key was published since the last wait (a waiter that skips its read must not skip this)."""
        return self._event.is_set()

    def clear(self) -> None:
        """Forget the publishes so far: for a waiter that has just read, synchronously after the transaction
        that read (no await between), so that the only publishes it forgets are ones its read saw."""
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """Wait until a key is published (True) or `timeout` passes (False); re-arms itself."""
        if timeout <= 0 and not self._event.is_set():
            return False
        try:
            # asyncio.timeout rather than wait_for, which (3.11) wraps the wait in a task of its own: a
            # cost on every long-poll of every idle agent.
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            woke = self._event.is_set()
            self._event.clear()
        return woke

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._hub._unsubscribe(self)


class Hub:
    """Wake-up registry for one cloud process."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self.closing = False
        self.complete = True
        """Every wake-up reaches this hub: one process (SQLite), or the PostgreSQL listener is up. While
        False (a listener reconnecting), waiters re-read the database every `recheck_seconds`."""

    def recheck_after(self, fast: float, slow: float) -> float:
        """How long a waiter may go without re-reading the database: `slow` while every wake-up arrives
        (a re-read then only guards against a listener that died silently), else `fast`."""
        return slow if self.complete else fast

    def subscribe(self, *keys: str) -> Subscription:
        sub = Subscription(self, keys)
        for key in keys:
            self._subs[key].add(sub)
        if self.closing:
            sub._wake()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        for key in sub.keys:
            subs = self._subs.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[key]

    def publish(self, keys: Mapping[str, Any] | Iterable[str]) -> None:
        """Wake every subscription waiting on any of `keys` (a mapping gives each key a payload)."""
        items = keys.items() if isinstance(keys, Mapping) else ((k, None) for k in keys)
        for key, payload in items:
            for sub in tuple(self._subs.get(key, ())):
                sub._wake(payload)

    def wake_all(self) -> None:
        """Wake every waiter without a payload: each re-reads the database (after a lost wake-up)."""
        for subs in tuple(self._subs.values()):
            for sub in tuple(subs):
                sub._wake()

    def close(self) -> None:
        """Wake every waiter so long-polls answer before the server stops."""
        self.closing = True
        for subs in tuple(self._subs.values()):
            for sub in tuple(subs):
                sub._wake()
