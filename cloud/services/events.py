"""Wake-up keys a unit of work publishes once its transaction commits (never before: a waiter
woken early would read the old state)."""

from __future__ import annotations

from sqlmodel import Session

_KEY = "tiangong.publish"


def publish(session: Session, *keys: str) -> None:
    """Queue `keys` to be published after this session's transaction commits."""
    session.info.setdefault(_KEY, set()).update(keys)


def take(session: Session) -> set[str]:
    """The keys queued on this session, removing them."""
    keys: set[str] = session.info.pop(_KEY, set())
    return keys
