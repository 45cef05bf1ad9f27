"""The per-target pool cache: one pool per key, idle pools closed, busy ones kept, a bound on their number."""

from __future__ import annotations

import functools
import threading

from executors.db.pools import PoolCache


class Pool:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False


def make(idle_seconds: float = 0.0, max_pools: int = 64) -> tuple[PoolCache[Pool], list[str]]:
    closed: list[str] = []

    def close(p: Pool) -> None:
        p.closed = True
        closed.append(p.name)

    return PoolCache(close, idle_seconds=idle_seconds, max_pools=max_pools), closed


def test_one_pool_per_key_reused() -> None:
    cache, _ = make(idle_seconds=60)
    with cache.lease("a", lambda: Pool("a1")) as first:
        pass
    with cache.lease("a", lambda: Pool("a2")) as second:
        pass
    assert first is second and len(cache) == 1


def test_idle_pools_are_closed_but_not_busy_ones() -> None:
    cache, closed = make(idle_seconds=0.0)
    with cache.lease("idle", lambda: Pool("idle")):
        pass
    with cache.lease("busy", lambda: Pool("busy")):
        assert cache.sweep() == 1
        assert closed == ["idle"]
    assert cache.sweep() == 1 and closed == ["idle", "busy"]
    assert len(cache) == 0


def test_least_recently_used_idle_pool_makes_room() -> None:
    cache, closed = make(idle_seconds=60, max_pools=2)
    for key in ("a", "b"):
        with cache.lease(key, functools.partial(Pool, key)):
            pass
    with cache.lease("c", lambda: Pool("c")):
        pass
    assert closed == ["a"] and len(cache) == 2


def test_concurrent_first_use_keeps_one_pool_and_closes_the_spare() -> None:
    cache, closed = make(idle_seconds=60)
    start = threading.Barrier(8)
    got: list[Pool] = []

    def use(i: int) -> None:
        start.wait()
        with cache.lease("k", lambda: Pool(f"p{i}")) as pool:
            got.append(pool)

    threads = [threading.Thread(target=use, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(p) for p in got}) == 1 and len(cache) == 1
    assert not got[0].closed
    assert all(name != got[0].name for name in closed)
