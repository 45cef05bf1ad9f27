"""Running a blocking driver call in a worker thread while still honouring cancel and deadline.

Abandoning the thread is not enough: the statement would go on running on the server. So when the task
is canceled or its time is up, `interrupt` (KILL QUERY, a PostgreSQL cancel request...) is called from
another thread, and the worker is awaited until the driver returns with the server's error. A call with
no `interrupt` (a connect, a ping) is left to finish in its thread at once: nothing would end it sooner.
The race itself (call, cancel event, deadline) is `executors.base.until_stopped`. `StatementGuard` is
what a session's interrupt needs besides: no statement starts once stopped, and the kill is repeated
while the worker is still inside one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from executors.base import Limits, Stopped, discard_outcome, until_stopped

T = TypeVar("T")
log = logging.getLogger("tiangong.executors.db")

__all__ = ["INTERRUPT_GRACE_SECONDS", "INTERRUPT_REPEAT_SECONDS", "Interrupted", "StatementGuard", "call"]

INTERRUPT_GRACE_SECONDS = 10.0
"""How long a worker gets to return after its statement was interrupted before it is abandoned."""
INTERRUPT_REPEAT_SECONDS = 0.5
"""How long a worker gets after one interrupt before the next is sent (StatementGuard.stop)."""


async def call(
    fn: Callable[[], T],
    *,
    cancel: asyncio.Event,
    deadline: float,
    interrupt: Callable[[], None] | None = None,
    on_late_result: Callable[[T], None] | None = None,
) -> T:
    """`fn()` in a thread; raises Stopped after interrupting it on cancel or at `deadline` (loop time).

    `on_late_result` receives what `fn` returns if it returns only after Stopped was raised (a
    connection checked out too late must still go back to its pool).
    """
    work: asyncio.Future[T] | None = None

    async def in_thread() -> T:
        nonlocal work
        work = asyncio.ensure_future(asyncio.to_thread(fn))
        return await asyncio.shield(work)

    def hand_over_late_result(running: asyncio.Future[T]) -> None:
        if on_late_result is not None:
            late = on_late_result

            def hand_over(fut: asyncio.Future[T]) -> None:
                if not fut.cancelled() and fut.exception() is None:
                    late(fut.result())

            running.add_done_callback(hand_over)

    try:
        return await until_stopped(Limits(cancel, deadline), in_thread())
    except Stopped as stop:
        if work is None:
            raise  # stopped before the call started: nothing runs
        reason = stop.reason
        running = work
    except asyncio.CancelledError:
        # The caller itself was canceled: the thread runs on, and what it returns is never received.
        if work is not None:
            hand_over_late_result(work)
        raise
    hand_over_late_result(running)
    if interrupt is None:
        # Nothing would make the worker return sooner (a connect, a ping): waiting only delays the stop.
        running.add_done_callback(discard_outcome)
        raise Stopped(reason, abandoned=True)
    try:
        await asyncio.to_thread(interrupt)
    except Exception as exc:  # the server may already be gone; the result says what happened
        log.warning("interrupting the running statement failed: %s", exc)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(running), INTERRUPT_GRACE_SECONDS)
    raise Stopped(reason, abandoned=not running.done())


class Interrupted(Exception):
    """The session was interrupted: no further statement of the task may start."""


class StatementGuard:
    """One connection's worker seen from other threads: whether it is inside a statement, and the stop.

    A cancel can arrive between two statements of one step (the backup read, then the UPDATE), or an
    interrupt can reach the server just before the statement it was meant for: so once stopped, no
    statement starts (`check`), and the interrupt is repeated while the worker is still busy.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self.stopped = False

    @contextlib.contextmanager
    def busy(self, starts_work: bool = True) -> Iterator[None]:
        """Around the worker's use of the connection; `starts_work` False for a commit or rollback, which
        must still run after a stop."""
        if starts_work:
            self.check()
        with self._cond:
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def check(self) -> None:
        """Raise Interrupted once stopped: called before each statement is sent."""
        if self.stopped:
            raise Interrupted("interrupted before the statement started")

    def stop(self, kill: Callable[[], None], grace: float = INTERRUPT_GRACE_SECONDS) -> None:
        """Mark stopped, then `kill` every INTERRUPT_REPEAT_SECONDS until the worker is idle or `grace` ends."""
        self.stopped = True
        give_up = time.monotonic() + grace
        while self.is_busy() and time.monotonic() < give_up:
            kill()
            self.wait_idle(min(INTERRUPT_REPEAT_SECONDS, max(0.0, give_up - time.monotonic())))

    def is_busy(self) -> bool:
        with self._cond:
            return self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Whether the worker is idle within `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout)
