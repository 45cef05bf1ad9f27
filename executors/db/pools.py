"""Connection pools cached per target, bounded, and closed when nobody has used them for a while.

Seed 004 sets the size of one pool: at most 10 open connections, 5 kept idle, each living at most an
hour. This cache adds the bound on how many pools an agent keeps (one per target, account and
database) and closes a pool after `IDLE_SECONDS` without use, so an agent that ran one migration
against a server does not hold connections to it for the rest of its life.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

P = TypeVar("P")
log = logging.getLogger("tiangong.executors.db")

MAX_OPEN = 10
MAX_IDLE = 5
MAX_LIFETIME_SECONDS = 3600
IDLE_SECONDS = 600.0
"""A pool unused this long is closed."""
MAX_POOLS = 64
"""More targets than this at once: the least recently used idle pool is closed to make room."""


@dataclass
class _Entry(Generic[P]):
    pool: P
    users: int = 0
    last_used: float = 0.0


class PoolCache(Generic[P]):
    """key -> pool; `lease` hands a pool out and marks it busy until the block ends."""

    def __init__(self, close: Callable[[P], None], *, idle_seconds: float = IDLE_SECONDS, max_pools: int = MAX_POOLS):
        self._close = close
        self._idle = idle_seconds
        self._max = max_pools
        self._entries: dict[Hashable, _Entry[P]] = {}
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        atexit.register(self.close_all)

    @contextlib.contextmanager
    def lease(self, key: Hashable, create: Callable[[], P]) -> Iterator[P]:
        """The pool for `key`, created on first use (outside the lock: creating may connect)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users += 1
        if entry is None:
            pool = create()
            with self._lock:
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._entries[key] = _Entry(pool)
                    extra = None
                else:
                    extra = pool  # another thread made one first: keep theirs
                entry.users += 1
                evicted = self._evict_locked()
            if extra is not None:
                self._close_quietly(extra)
            for old in evicted:
                self._close_quietly(old)
            self._start_sweeper()
        try:
            yield entry.pool
        finally:
            with self._lock:
                entry.users -= 1
                entry.last_used = time.monotonic()

    def sweep(self) -> int:
        """Close pools idle for longer than the limit; returns how many were closed."""
        now = time.monotonic()
        with self._lock:
            stale = [k for k, e in self._entries.items() if e.users == 0 and now - e.last_used > self._idle]
            pools = [self._entries.pop(k).pool for k in stale]
        for pool in pools:
            self._close_quietly(pool)
        return len(pools)

    def close_all(self) -> None:
        with self._lock:
            pools = [e.pool for e in self._entries.values()]
            self._entries.clear()
        for pool in pools:
            self._close_quietly(pool)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict_locked(self) -> list[P]:
        idle = sorted((e.last_used, k) for k, e in self._entries.items() if e.users == 0)
        out: list[P] = []
        while len(self._entries) > self._max and idle:
            _, key = idle.pop(0)
            out.append(self._entries.pop(key).pool)
        return out

    def _start_sweeper(self) -> None:
        with self._lock:
            if self._sweeper is not None:
                return
            self._sweeper = threading.Thread(target=self._sweep_forever, name="db-pool-sweeper", daemon=True)
        self._sweeper.start()

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(max(1.0, self._idle / 4))
            self.sweep()

    def _close_quietly(self, pool: Any) -> None:
        try:
            self._close(pool)
        except Exception as exc:  # a server gone away must not stop the others from closing
            log.warning("closing a connection pool failed: %s", exc)
