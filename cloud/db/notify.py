"""Wake-ups between cloud replicas on PostgreSQL: LISTEN/NOTIFY on one channel.

A unit of work that queued wake-up keys (cloud.db.events) also NOTIFYs them inside its
transaction, so PostgreSQL delivers them at commit to every listening replica, which publishes them on
its own hub. A replica ignores its own notifications (it published them in-process already). A lost
notification (a listener reconnecting) only delays work: every waiting request re-reads the database at
least every `recheck_seconds`, and the listener wakes every waiter after it reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import URL

from cloud.db.prepared import driver_errors
from cloud.hub import Hub

log = logging.getLogger("tiangong.cloud")

CHANNEL = "tiangong"
MAX_PAYLOAD = 7900
"""PostgreSQL refuses payloads of 8000 bytes or more; longer key lists go as several notifications."""
RECONNECT_MAX_SECONDS = 10.0
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
"""The listener's connection is idle between notifications: without TCP keepalives a server or network gone
silent would leave it waiting forever, and this replica would miss wake-ups (revocations among them)
without knowing. With these the kernel finds it dead within about 25 s and the listener reconnects."""


def new_origin() -> str:
    """This process's tag on its notifications."""
    return secrets.token_hex(6)


def commit_with(conn: Connection, origin: str, keys: Iterable[str]) -> None:
    """NOTIFY `keys` (space-separated after `origin|`) and COMMIT the transaction, in one round trip to the
    server: the statements go together as one simple query (the payloads as quoted literals). A round trip
    saved per unit of work; SQLAlchemy's own commit afterwards finds no transaction open (psycopg then sends
    nothing). Other replicas hear of it at commit, never before."""
    from psycopg import sql

    head = origin + "|"
    chunk = head
    payloads = []
    for key in keys:
        if len(chunk) + len(key) + 1 > MAX_PAYLOAD and chunk != head:
            payloads.append(chunk)
            chunk = head
        chunk += key + " "
    payloads.append(chunk)
    raw: Any = conn.connection.dbapi_connection
    notify = sql.SQL("SELECT pg_notify({}, {});")
    statements = [notify.format(sql.Literal(CHANNEL), sql.Literal(p)) for p in payloads]
    with driver_errors(conn.dialect, "NOTIFY ...; COMMIT"):
        raw.execute(sql.SQL(" ").join([*statements, sql.SQL("COMMIT")]))


def parse(payload: str, origin: str) -> list[str]:
    """The keys of a notification, or none when it is this process's own."""
    sender, _, keys = payload.partition("|")
    return [] if sender == origin else keys.split()


def listener_name() -> str:
    """The listener's application_name: an operator (or a test) can find one replica's LISTEN connection
    in pg_stat_activity by the process id."""
    return f"tiangong-listen-{os.getpid()}"


def conninfo(url: URL) -> str:
    """A libpq connection string for the listener, from the SQLAlchemy URL (`postgresql+psycopg://...`), with
    TCP keepalives (KEEPALIVES)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url.set(drivername="postgresql").render_as_string(hide_password=False), **KEEPALIVES)


async def listen_forever(url: URL, origin: str, hub: Hub) -> None:
    """Hold a LISTEN connection and publish what other replicas notify; reconnect with backoff."""
    import psycopg

    delay = 0.5
    while True:
        try:
            conn: Any = await psycopg.AsyncConnection.connect(
                conninfo(url), autocommit=True, application_name=listener_name()
            )
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                hub.complete = True
                # Whatever was notified while no one listened is unknown: let every waiter look again.
                hub.wake_all()
                delay = 0.5
                async for note in conn.notifies():
                    keys = parse(note.payload, origin)
                    if keys:
                        hub.publish(keys)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("notify listener: %s; reconnecting in %.1fs", exc, delay)
        # Wake-ups from other replicas may be lost until the listener is back: waiters re-read often.
        hub.complete = False
        await asyncio.sleep(delay)
        delay = min(RECONNECT_MAX_SECONDS, delay * 2)
