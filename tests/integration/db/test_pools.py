"""Seed 004's pool bounds (10 open, 5 idle, 1 h lifetime) of the one pool the SQL types share, on the real
MariaDB and PostgreSQL; the Mongo and Elasticsearch clients are inspected as built (they connect
lazily). The ClickHouse HTTP pool is checked in test_clickhouse.py, next to its server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from executors.db import mysql_conn, pools, postgres_conn
from executors.db.params import Target, parse_params, resolve_targets
from tests.integration.db.conftest import MariaDb, PgDb


def target(type_: str, spec: dict[str, Any]) -> Target:
    return resolve_targets(type_, parse_params({"target": spec}, type_), {})[0]


@pytest.fixture
def pg_pools() -> Iterator[None]:
    yield
    postgres_conn._POOLS.close_all()  # this test's pools hold connections to a database about to be dropped


def test_postgres_keeps_at_most_five_idle_of_ten(pg: PgDb, pg_pools: None) -> None:
    sessions = [postgres_conn.open_session(target("postgres", pg.target())) for _ in range(7)]
    pool: pools.ConnectionPool[Any] = sessions[0]._pool
    assert (pool.max_open, pool.max_idle, pool.lifetime) == (pools.MAX_OPEN, pools.MAX_IDLE, pools.MAX_LIFETIME_SECONDS)
    for s in sessions:
        s.close(True)
    assert pool.stats() == (pools.MAX_IDLE, pools.MAX_IDLE)
    rows = pg.query(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tiangong' AND datname = %s", pg.name
    )
    assert rows == [(pools.MAX_IDLE,)]
    # The pool still hands out (and grows back to) its ten, then an eleventh waits and gives up.
    again = [postgres_conn.open_session(target("postgres", pg.target())) for _ in range(pools.MAX_OPEN)]
    assert pool.stats() == (pools.MAX_OPEN, 0)
    pool.wait_seconds = 0.1
    with pytest.raises(pools.PoolExhausted, match="all 10 connections to this server are busy"):
        postgres_conn.open_session(target("postgres", pg.target()))
    for s in again:
        s.close(True)
    assert pool.stats() == (pools.MAX_IDLE, pools.MAX_IDLE)


def test_postgres_session_state_does_not_reach_the_next_task(pg: PgDb, pg_pools: None) -> None:
    first = postgres_conn.open_session(target("postgres", pg.target()))
    first.conn.execute("SET search_path TO nowhere")
    first.conn.execute("CREATE TEMPORARY TABLE leftover (a int)")
    first.close(True)
    second = postgres_conn.open_session(target("postgres", pg.target()))
    try:
        assert second.conn is first.conn  # the same connection, reset
        assert second.conn.execute("SHOW search_path").fetchone()[0] != "nowhere"
        assert second.conn.execute("SELECT to_regclass('pg_temp.leftover')").fetchone() == (None,)
    finally:
        second.close(True)


def test_mysql_keeps_at_most_five_idle_of_ten(mariadb: MariaDb) -> None:
    pool = mysql_conn._new_pool(target("mysql", mariadb.target()))
    try:
        assert (pool.max_open, pool.max_idle, pool.lifetime) == (
            pools.MAX_OPEN,
            pools.MAX_IDLE,
            pools.MAX_LIFETIME_SECONDS,
        )
        out = [pool.get() for _ in range(7)]
        for item in out:
            pool.put(item, True)
        assert pool.stats() == (pools.MAX_IDLE, pools.MAX_IDLE)  # the two beyond five were closed
    finally:
        pool.close()


def test_a_connection_the_server_dropped_is_replaced(mariadb: MariaDb) -> None:
    pool = mysql_conn._new_pool(target("mysql", mariadb.target()))
    try:
        item = pool.get()
        pool.put(item, True)
        item.conn.close()  # as if the server had gone away while it was idle: the ping before reuse fails
        fresh = pool.get()
        assert fresh.conn is not item.conn and fresh.conn.open
        assert pool.stats() == (1, 0)
        pool.put(fresh, True)
    finally:
        pool.close()


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
