"""Blocking client calls in a worker thread, checked against the task's cancel event and deadline.

The kubernetes client is synchronous. Each API call runs in a thread of its own; between calls and while
one is in flight, a cancel or the deadline ends the wait at once. A call in flight is then left to finish
in its thread (its read timeout is the time that was left), because an HTTP request cannot be taken back:
a write already sent may still be applied, and the task's error says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from executors.base import Stopped, discard_outcome, stop_reason, until_stopped

T = TypeVar("T")
__all__ = ["CONNECT_TIMEOUT_SECONDS", "Calls"]
CONNECT_TIMEOUT_SECONDS = 10.0


@dataclass
class Calls:
    """Runs blocking calls for one task."""

    cancel: asyncio.Event
    deadline: float
    """Loop time at which the task's execution limit is reached."""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    """Kept so worker threads can read the time left too (loop.time() is a monotonic clock)."""

    def remaining(self) -> float:
        return self.deadline - self.loop.time()

    @property
    def cancel_event(self) -> asyncio.Event:
        """The task's: Calls is what `until_stopped` watches."""
        return self.cancel

    def check(self) -> None:
        """Raise Stopped when canceled or out of time."""
        reason = stop_reason(self)
        if reason is not None:
            raise Stopped(reason)

    def request_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for one HTTP request: never past the deadline."""
        left = max(0.1, self.remaining())
        return min(CONNECT_TIMEOUT_SECONDS, left), left

    async def __call__(self, fn: Callable[[], T]) -> T:
        """`fn()` in a worker thread; raises Stopped on cancel or at the deadline."""
        self.check()
        work = asyncio.ensure_future(asyncio.to_thread(fn))
        try:
            return await until_stopped(self, asyncio.shield(work))
        except Stopped as stop:
            work.add_done_callback(discard_outcome)  # its outcome no longer matters; do not warn about it
            raise Stopped(stop.reason, in_flight=True) from None

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (less if the deadline comes first); raises Stopped on cancel or at the deadline."""
        await until_stopped(self, asyncio.sleep(seconds))
