"""The one connection pool of the SQL types: bounds, lifetime, the ping before reuse, the reset before keeping."""

from __future__ import annotations

import itertools
import threading

import pytest

from executors.db.pools import ConnectionPool, PoolExhausted


class Conn:
    def __init__(self, n: int) -> None:
        self.n, self.closed, self.ok = n, False, True


def make(**kwargs: object) -> tuple[ConnectionPool[Conn], list[Conn]]:
    made: list[Conn] = []
    numbers = itertools.count(1)

    def connect() -> Conn:
        made.append(Conn(next(numbers)))
        return made[-1]

    def close(conn: Conn) -> None:
        conn.closed = True

    return ConnectionPool(connect, close, **kwargs), made  # type: ignore[arg-type]


def test_ten_open_at_most_five_kept() -> None:
    pool, made = make(wait_seconds=0.05)
    out = [pool.get() for _ in range(10)]
    with pytest.raises(PoolExhausted, match="all 10 connections to this server are busy"):
        pool.get()
    for item in out:
        pool.put(item, True)
    assert pool.stats() == (5, 5)
    assert sum(c.closed for c in made) == 5
    assert pool.get().conn is made[4]  # the most recently returned comes back first


def test_a_waiting_checkout_gets_the_connection_given_back() -> None:
    pool, _ = make(max_open=1, wait_seconds=5)
    first = pool.get()
    got: list[Conn] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get().conn))
    waiter.start()
    pool.put(first, True)
    waiter.join(5)
    assert got == [first.conn]


def test_not_reusable_stale_dead_or_unresettable_connections_are_closed() -> None:
    resets: list[Conn] = []

    def reset(conn: Conn) -> None:
        if conn.n == 2:
            raise RuntimeError("busy")
        resets.append(conn)

    pool, made = make(alive=lambda c: c.ok, reset=reset)
    one, two = pool.get(), pool.get()
    pool.put(one, False)
    pool.put(two, True)  # its reset fails
    assert [c.closed for c in made] == [True, True] and pool.stats() == (0, 0)
    three = pool.get()
    pool.put(three, True)
    three.conn.ok = False  # died while idle: the ping before reuse fails
    four = pool.get()
    assert four.conn is not three.conn and three.conn.closed and resets == [three.conn]
    four.born -= 7200  # older than the lifetime: not kept
    pool.put(four, True)
    assert pool.stats() == (0, 0)


def test_a_failed_connect_gives_its_room_back() -> None:
    def refuse() -> Conn:
        raise OSError("refused")

    pool: ConnectionPool[Conn] = ConnectionPool(refuse, lambda c: None, max_open=1, wait_seconds=0.05)
    for _ in range(3):
        with pytest.raises(OSError, match="refused"):
            pool.get()
    assert pool.stats() == (0, 0)


def test_close_closes_idle_and_later_returns() -> None:
    pool, made = make()
    kept, out = pool.get(), pool.get()
    pool.put(kept, True)
    pool.close()
    pool.put(out, True)
    assert all(c.closed for c in made) and pool.stats() == (0, 0)
