"""The one way the SQL types pool connections: `ConnectionPool` per target, `PoolCache` of those.

Seed 004 sets the size of one pool: at most 10 open connections, 5 kept idle, each living at most an
hour; `ConnectionPool` holds any driver's connections to those bounds (mysql, postgres, both ClickHouse
protocols). The cache adds the bound on how many pools an agent keeps (one per target, account and
database) and closes a pool after `IDLE_SECONDS` without use, so an agent that ran one migration
against a server does not hold connections to it for the rest of its life. Mongo and Elasticsearch
clients pool inside their drivers, set to the same bounds, and are cached here too.
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
C = TypeVar("C")
log = logging.getLogger("tiangong.executors.db")

MAX_OPEN = 10
MAX_IDLE = 5
MAX_LIFETIME_SECONDS = 3600
IDLE_SECONDS = 600.0
"""A pool unused this long is closed."""
MAX_POOLS = 64
"""More targets than this at once: the least recently used idle pool is closed to make room."""
WAIT_SECONDS = 30.0
"""How long a checkout waits for a connection when all MAX_OPEN are out."""


class PoolExhausted(RuntimeError):
    """Every connection of the pool stayed busy for the whole wait."""


@dataclass
class Pooled(Generic[C]):
    """A checked-out connection and when it was made (for the lifetime bound)."""

    conn: C
    born: float


class ConnectionPool(Generic[C]):
    """One target's connections: at most `max_open` out or idle, `max_idle` kept, none older than
    `lifetime`. `connect` runs in the caller's thread, so a refused connection fails the task at once
    with the server's reason; `alive` is asked before an idle connection is handed out again (a ping),
    `reset` before one is kept (a rollback, DISCARD ALL); a connection failing either is closed. Without
    `wait_seconds` a checkout waits WAIT_SECONDS, read when it waits."""

    def __init__(
        self,
        connect: Callable[[], C],
        close: Callable[[C], None],
        *,
        alive: Callable[[C], bool] | None = None,
        reset: Callable[[C], None] | None = None,
        max_open: int = MAX_OPEN,
        max_idle: int = MAX_IDLE,
        lifetime: float = MAX_LIFETIME_SECONDS,
        wait_seconds: float | None = None,
    ) -> None:
        self._connect, self._close, self._alive, self._reset = connect, close, alive, reset
        self.max_open, self.max_idle, self.lifetime, self.wait_seconds = max_open, max_idle, lifetime, wait_seconds
        self._idle: list[Pooled[C]] = []
        self._open = 0
        self._closed = False
        self._cond = threading.Condition()

    def get(self) -> Pooled[C]:
        """An idle connection that is still alive, else a new one; raises PoolExhausted after the wait."""
        while True:
            item = self._take()
            if item is None:
                break
            if self._check(item):
                return item
        try:
            return Pooled(self._connect(), time.monotonic())
        except BaseException:
            self._release()
            raise

    def put(self, item: Pooled[C], reusable: bool) -> None:
        """Give `item` back: kept idle when reusable, young, reset cleanly and below `max_idle`; else closed."""
        keep = reusable and time.monotonic() - item.born < self.lifetime
        if keep and self._reset is not None:
            try:
                self._reset(item.conn)
            except Exception as exc:  # a connection that cannot be reset is not handed to the next task
                log.debug("resetting a pooled connection failed: %s", exc)
                keep = False
        with self._cond:
            keep = keep and not self._closed and len(self._idle) < self.max_idle
            if keep:
                self._idle.append(item)
                self._cond.notify()
        if not keep:
            self._discard(item)

    def stats(self) -> tuple[int, int]:
        """(open, idle) connections."""
        with self._cond:
            return self._open, len(self._idle)

    def close(self) -> None:
        """Close the idle connections; those still out are closed when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for item in idle:
            self._discard(item)

    def _take(self) -> Pooled[C] | None:
        """An idle connection (the most recently used), or None after reserving room for a new one."""
        stale: list[Pooled[C]] = []
        try:
            with self._cond:
                wait = WAIT_SECONDS if self.wait_seconds is None else self.wait_seconds
                if not self._cond.wait_for(lambda: self._idle or self._open < self.max_open, wait):
                    raise PoolExhausted(f"all {self.max_open} connections to this server are busy")
                while self._idle:
                    item = self._idle.pop()
                    if time.monotonic() - item.born < self.lifetime:
                        return item
                    stale.append(item)
                    self._open -= 1
                self._open += 1
                return None
        finally:
            for old in stale:
                self._quiet_close(old.conn)

    def _check(self, item: Pooled[C]) -> bool:
        try:
            ok = self._alive is None or self._alive(item.conn)
        except Exception:
            ok = False
        if not ok:
            self._discard(item)
        return ok

    def _discard(self, item: Pooled[C]) -> None:
        self._quiet_close(item.conn)
        self._release()

    def _release(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def _quiet_close(self, conn: C) -> None:
        try:
            self._close(conn)
        except Exception as exc:  # a connection already broken cannot be closed cleanly; it is gone anyway
            log.debug("closing a pooled connection failed: %s", exc)


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
