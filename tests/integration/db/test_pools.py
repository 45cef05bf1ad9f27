"""Seed 004's pool bounds per driver (10 open, 5 idle, 1 h lifetime), on the real MariaDB and PostgreSQL
where a connection is needed; the Mongo and Elasticsearch clients are inspected as built (they connect
lazily). The ClickHouse HTTP pool is checked in test_clickhouse.py, next to its server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from executors.db import mysql_conn, pools, postgres_conn
from executors.db.params import Target, parse_params, resolve_targets
from tests.integration.db.conftest import MariaDb, PgDb


def target(type_: str, spec: dict[str, Any]) -> Target:
    return resolve_targets(type_, parse_params({"target": spec}, type_), {})[0]


def eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Wait for a background worker's effect (psycopg_pool returns connections in its own threads)."""
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"not reached within {seconds} s: {what}")
        time.sleep(0.02)


@pytest.fixture
def pg_pools() -> Iterator[None]:
    yield
    postgres_conn._POOLS.close_all()  # this test's pools hold connections to a database about to be dropped


def test_postgres_keeps_at_most_five_idle_of_ten(pg: PgDb, pg_pools: None) -> None:
    sessions = [postgres_conn.open_session(target("postgres", pg.target())) for _ in range(7)]
    pool: Any = sessions[0]._pool
    assert (pool.min_size, pool.max_size, pool.max_lifetime) == (0, pools.MAX_OPEN, pools.MAX_LIFETIME_SECONDS)
    for s in sessions:
        s.close(True)

    def settled() -> bool:
        stats = pool.get_stats()
        return bool(stats["pool_available"] == stats["pool_size"] == pools.MAX_IDLE)

    eventually(settled, "5 idle connections and no more open")
    rows = pg.query(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tiangong' AND datname = %s", pg.name
    )
    assert rows == [(pools.MAX_IDLE,)]
    # The pool still hands out (and grows back to) its ten.
    again = [postgres_conn.open_session(target("postgres", pg.target())) for _ in range(pools.MAX_OPEN)]
    assert pool.get_stats()["pool_size"] == pools.MAX_OPEN
    for s in again:
        s.close(True)
    eventually(settled, "back to 5 idle after ten were out")


def test_mysql_keeps_at_most_five_idle_of_ten(mariadb: MariaDb) -> None:
    pool = mysql_conn._new_pool(target("mysql", mariadb.target()))
    try:
        assert (pool.size(), pool._max_overflow, pool._recycle) == (pools.MAX_IDLE, 5, pools.MAX_LIFETIME_SECONDS)
        out = [pool.connect() for _ in range(7)]
        for conn in out:
            conn.close()
        assert (pool.checkedin(), pool.checkedout()) == (pools.MAX_IDLE, 0)  # the two beyond five were closed
    finally:
        pool.dispose()


def test_mongo_client_pool_options() -> None:
    """pymongo bounds open connections and their idle time, but has neither an idle-count bound nor a
    connection lifetime (docs/databases-nosql.md)."""
    from executors.db.mongo import MAX_IDLE_TIME_MS, _new_client

    client = _new_client(target("mongo", {"host": "127.0.0.1"}))
    try:
        opts = client.options.pool_options
        assert (opts.max_pool_size, opts.min_pool_size) == (pools.MAX_OPEN, 0)
        assert opts.max_idle_time_seconds == MAX_IDLE_TIME_MS / 1000
    finally:
        client.close()


@pytest.mark.parametrize(("flavor", "block"), [("elasticsearch", True), ("opensearch", False)])
def test_search_clients_keep_ten_connections_per_node(flavor: str, block: bool) -> None:
    from executors.db.search import _new_client

    client = _new_client(target("elasticsearch", {"host": "127.0.0.1", "flavor": flavor}))
    try:
        if flavor == "elasticsearch":
            (node,) = client.transport.node_pool.all()
        else:
            (node,) = client.transport.connection_pool.connections
        assert (node.pool.pool.maxsize, node.pool.block) == (pools.MAX_OPEN, block)
    finally:
        client.close()
