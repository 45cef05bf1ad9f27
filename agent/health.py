"""Health files for a process manager to probe, since the agent serves no port: `<data_dir>/alive` is
touched while the agent's loops turn (liveness: its age), `<data_dir>/ready` exists while the agent is
registered with its cloud and not draining (readiness)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

log = logging.getLogger("tiangong.agent")

ALIVE_FILE = "alive"
READY_FILE = "ready"
TOUCH_EVERY_SECONDS = 1.0
"""`alive` is touched at most this often: the claim loop may pass many times a second on a busy agent."""


class Health:
    """The two files of one agent process; failures to write them are logged, never raised: a probe
    that cannot be fed must not stop the agent from serving."""

    def __init__(self, data_dir: Path) -> None:
        self.alive_path = data_dir / ALIVE_FILE
        self.ready_path = data_dir / READY_FILE
        self._touched = -math.inf
        self._warned = False

    def start(self) -> None:
        """A new process is alive and not ready yet: a `ready` left by a process that was killed is stale."""
        self._remove_ready()
        self.alive()

    def alive(self) -> None:
        """Called on every pass of a loop, whether or not the cloud answered: the event loop turns."""
        now = time.monotonic()
        if now - self._touched < TOUCH_EVERY_SECONDS:
            return
        self._touched = now
        self._touch(self.alive_path)

    def ready(self) -> None:
        """Registered with the cloud: the agent serves."""
        self._touch(self.ready_path)

    def not_ready(self) -> None:
        """Draining or exiting: the agent takes no new work."""
        self._remove_ready()

    def _touch(self, path: Path) -> None:
        try:
            path.touch()
        except OSError as exc:
            if not self._warned:  # once: the alive file is touched every second
                log.warning("cannot write the health file %s: %s", path, exc)
                self._warned = True

    def _remove_ready(self) -> None:
        try:
            self.ready_path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove the health file %s: %s", self.ready_path, exc)
