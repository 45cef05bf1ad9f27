"""Wake-ups between replicas: what one cloud process publishes reaches another's hub through
PostgreSQL's LISTEN/NOTIFY, only at commit, and a process ignores its own notifications."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from cloud.db import events, notify
from cloud.db.engine import Database
from cloud.hub import Hub
from tests.e2e.pgdb import PgDatabases


@pytest.fixture
def pg_url() -> Iterator[str]:
    dbs = PgDatabases()
    try:
        yield dbs.create()
    finally:
        dbs.drop_all()


def test_parse_skips_own_notifications() -> None:
    assert notify.parse("abc|agent:x task:1 ", "other") == ["agent:x", "task:1"]
    assert notify.parse("abc|agent:x ", "abc") == []


def test_the_listeners_connection_has_tcp_keepalives(pg_url: str) -> None:
    """Idle between notifications, the listener would otherwise never learn that a silent network dropped it."""
    import psycopg
    from sqlalchemy import make_url

    with psycopg.connect(notify.conninfo(make_url(pg_url))) as conn:
        params = conn.info.get_parameters()
    assert {key: params.get(key) for key in notify.KEEPALIVES} == {k: str(v) for k, v in notify.KEEPALIVES.items()}


def test_a_long_key_list_goes_as_several_notifications_under_the_limit(pg_url: str) -> None:
    db = Database(pg_url, Hub())
    keys = [f"logs:{n}" for n in range(3000)]
    try:
        with db.engine.connect() as conn:
            conn.execute(text(f"LISTEN {notify.CHANNEL}"))
            conn.commit()
            with db.engine.begin() as sender:
                notify.commit_with(sender, "me", keys)
            conn.execute(text("SELECT 1"))
            raw = conn.connection.dbapi_connection
            got = [n.payload for n in raw.notifies(timeout=2, stop_after=100)]  # type: ignore[union-attr]
    finally:
        db.dispose()
    assert len(got) > 1 and all(len(p.encode()) < 8000 for p in got)
    assert [k for p in got for k in notify.parse(p, "other")] == keys


def test_another_process_hub_is_woken_at_commit_only(pg_url: str) -> None:
    async def scenario() -> tuple[bool, bool]:
        sender = Database(pg_url, Hub())
        receiver_hub = Hub()
        receiver = Database(pg_url, receiver_hub)
        listener = asyncio.create_task(notify.listen_forever(receiver.engine.url, receiver.origin, receiver_hub))
        try:
            with receiver_hub.subscribe("agent:a1") as sub:
                # Wait until the listener is connected (it wakes every waiter once it listens).
                assert await sub.wait(10)

                def work() -> None:
                    with sender.transaction() as conn:
                        events.publish(conn, "agent:a1")
                        conn.execute(text("SELECT pg_sleep(1.5)"))  # the commit comes after this

                committing = asyncio.create_task(asyncio.to_thread(work))
                before_commit = await sub.wait(1.0)
                woke = await sub.wait(10)
                await committing
            return before_commit, woke
        finally:
            listener.cancel()
            sender.dispose()
            receiver.dispose()

    before_commit, woke = asyncio.run(scenario())
    assert not before_commit
    assert woke


def test_a_commit_with_its_notify_that_fails_raises_sqlalchemys_error(pg_url: str) -> None:
    """The NOTIFY and COMMIT go on the driver's own cursor; their failure must still come out as SQLAlchemy's
    error, as every other statement's does (the API's handlers and the channel's catch SQLAlchemy's kinds),
    never as the driver's own. Here the transaction was already aborted by an earlier statement."""
    from sqlalchemy.exc import DBAPIError, ProgrammingError

    db = Database(pg_url, Hub())
    try:
        with pytest.raises(DBAPIError) as raised, db.transaction() as conn:
            events.publish(conn, "agent:a1")  # a wake-up to send: the commit goes with its NOTIFY
            with pytest.raises(ProgrammingError):
                conn.execute(text("SELECT * FROM no_such_table"))
    finally:
        db.dispose()
    assert "NOTIFY" in str(raised.value)  # the commit's own error, not a rollback's
