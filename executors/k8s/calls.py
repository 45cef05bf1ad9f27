"""Blocking client calls in a worker thread, checked against the task's cancel event and deadline.

The kubernetes client is synchronous. Each API call runs in a thread of its own; between calls and while
one is in flight, a cancel or the deadline ends the wait at once. A call in flight is then left to finish
in its thread (its read timeout is the time that was left), because an HTTP request cannot be taken back:
a write already sent may still be applied, and the task's error says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 10.0


class Stopped(Exception):
    """The task was canceled (`reason` "canceled") or ran out of time ("timeout")."""

    def __init__(self, reason: str, in_flight: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.in_flight = in_flight
        """True when a request had been sent and not answered: it may still take effect."""


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

    def check(self) -> None:
        """Raise Stopped when canceled or out of time."""
        if self.cancel.is_set():
            raise Stopped("canceled")
        if self.remaining() <= 0:
            raise Stopped("timeout")

    def request_timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for one HTTP request: never past the deadline."""
        left = max(0.1, self.remaining())
        return min(CONNECT_TIMEOUT_SECONDS, left), left

    async def __call__(self, fn: Callable[[], T]) -> T:
        """`fn()` in a worker thread; raises Stopped on cancel or at the deadline."""
        self.check()
        work = asyncio.ensure_future(asyncio.to_thread(fn))
        stop = asyncio.ensure_future(self.cancel.wait())
        try:
            done, _ = await asyncio.wait({work, stop}, timeout=self.remaining(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work in done:
            return work.result()
        work.add_done_callback(_discard)  # its outcome no longer matters; do not warn about it
        raise Stopped("canceled" if self.cancel.is_set() else "timeout", in_flight=True)

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (less if the deadline comes first); raises Stopped on cancel or at the deadline."""
        self.check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.cancel.wait(), timeout=max(0.0, min(seconds, self.remaining())))
        self.check()


def _discard(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
