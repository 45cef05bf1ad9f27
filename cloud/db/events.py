"""Wake-up keys a unit of work publishes once its transaction commits (never before: a waiter
woken early would read the old state)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

_KEY = "tiangong.publish"


def publish(conn: Connection, *keys: str, payload: Any = None) -> None:
    """Queue `keys` (each with `payload`, if given) to be published after the transaction commits."""
    queued: dict[str, Any] = conn.info.setdefault(_KEY, {})
    for key in keys:
        if payload is not None or key not in queued:
            queued[key] = payload


def take(conn: Connection) -> dict[str, Any]:
    """The keys queued on this connection with their payloads, removing them.

    `Connection.info` outlives the checkout (it belongs to the pooled DBAPI connection), so the
    transaction takes the keys at its start too, dropping any a failed unit of work left behind.
    """
    queued: dict[str, Any] = conn.info.pop(_KEY, {})
    return queued
