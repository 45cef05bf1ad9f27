"""SIGINT and SIGTERM while a command waits on a task, as an exception the command handles (cancel the
task, or leave it running with --detach) before exiting 130 or 143. While the task is being created
the signal is held back, so the command always learns the id of what it started."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from cli.exitcodes import Code

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The user (Ctrl+C) or the CI runner (SIGTERM on a canceled job) asked us to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def code(self) -> Code:
        return Code.SIGINT if self.signum == signal.SIGINT else Code.SIGTERM


class Interrupts:
    """Within `with Interrupts() as sig:`, SIGINT and SIGTERM raise `Interrupted`."""

    def __init__(self) -> None:
        self._holding = False
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._holding and self._pending is None:
            self._pending = signum  # a second signal while held is not held: the user insists
            return
        raise Interrupted(signum)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold a first signal back until the block ends (a create must return the task's id), then raise it."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise Interrupted(signum)
