"""What a unit of work announces once its transaction commits (never before): wake-up keys for whoever
waits (a waiter woken early would read the old state), and observations for this process's metrics (a
rolled-back task must not be counted)."""

from __future__ import annotations

from collections.abc import Callable
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


_OBSERVED = "tiangong.observed"


def observe(conn: Connection, kind: str, row: Any) -> None:
    """Record that `kind` happened to `row` (a task row: "task.created", "task.claimed", "task.finished"),
    for the observers of the transaction's Database once it commits."""
    conn.info.setdefault(_OBSERVED, []).append((kind, row))


def take_observed(conn: Connection) -> list[tuple[str, Any]]:
    """The observations recorded on this connection, removing them (as `take` does the keys)."""
    observed: list[tuple[str, Any]] = conn.info.pop(_OBSERVED, [])
    return observed


_AFTER_COMMIT = "tiangong.after_commit"


def after_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Call `callback` once the transaction has committed, before its wake-ups are published (so what it
    sets is there for whoever they wake); never if it rolls back."""
    conn.info.setdefault(_AFTER_COMMIT, []).append(callback)


def take_after_commit(conn: Connection) -> list[Callable[[], None]]:
    """The callbacks queued on this connection, removing them (as `take` does the keys)."""
    callbacks: list[Callable[[], None]] = conn.info.pop(_AFTER_COMMIT, [])
    return callbacks
