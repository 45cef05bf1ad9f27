"""Credentials: minting tokens (only their SHA-256 is stored), listing, revoking, and registration uses."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, or_, select, update

from cloud.db import events
from cloud.db.batches import in_batches
from cloud.db.models import CREDENTIALS as C
from cloud.db.prepared import Prepared
from cloud.db.types import utcnow
from cloud.services.errors import NotFound
from wire.credentials import PREFIXES, Scope, TokenCreate, TokenKind

CredentialRow = Any
"""A row of the credentials table, from SQLAlchemy or a prepared statement (cloud.db.prepared): fields read as
attributes."""
TOUCH_EVERY = timedelta(seconds=60)
"""last_used_at is written at most this often per token: it is for people, not for accounting."""


def token_hash(token: bytes | str) -> str:
    """The stored form of a token: SHA-256, hex. Tokens are random, so no salt or slow hash is needed."""
    raw = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


def mint(kind: TokenKind) -> str:
    """A new random token with its kind's prefix (tgp_, tgr_, tga_)."""
    return PREFIXES[kind] + secrets.token_urlsafe(32)


def _insert(
    conn: Connection,
    kind: TokenKind,
    name: str,
    scope: Scope,
    created_by: str,
    *,
    agent_id: str | None = None,
    expires_in: int | None = None,
    single_use: bool = False,
) -> tuple[CredentialRow, str]:
    token = mint(kind)
    now = utcnow()
    values = {
        "kind": kind.value,
        "name": name,
        "token_hash": token_hash(token),
        "hint": token[:8],
        "agent_id": agent_id,
        "scope": scope.model_dump(mode="json"),
        "single_use": single_use,
        "uses": 0,
        "expires_at": now + timedelta(seconds=expires_in) if expires_in else None,
        "last_used_at": None,
        "created_at": now,
        "created_by": created_by,
    }
    row = conn.execute(C.insert().values(**values).returning(*C.c)).one()
    return row, token


def create_token(conn: Connection, body: TokenCreate, created_by: str) -> tuple[CredentialRow, str]:
    """An API token (tgp_) or a registration token (tgr_); returns the row and the token, shown once."""
    kind = TokenKind(body.kind)
    return _insert(
        conn, kind, body.name, body.scope(), created_by, expires_in=body.expires_in, single_use=body.single_use
    )


def issue_agent_token(
    conn: Connection, agent_id: str, name: str, created_by: str, expires_in: int | None = None
) -> tuple[CredentialRow, str]:
    """An agent token (tga_) bound to `agent_id`: it acts for that agent only."""
    return _insert(conn, TokenKind.agent, name, Scope(), created_by, agent_id=agent_id, expires_in=expires_in)


_TOUCH = Prepared(update(C).where(C.c.id == bindparam("b_id")).values(last_used_at=bindparam("b_now")))
_BY_HASH = Prepared(select(C).where(C.c.token_hash == bindparam("b_hash")))


def find(conn: Connection, hashed: str) -> CredentialRow | None:
    """The credential whose token hashes to `hashed` (every agent request whose token is not cached)."""
    return _BY_HASH.first(conn, {"b_hash": hashed})


def is_expired(row: CredentialRow) -> bool:
    return bool(row.expires_at is not None and row.expires_at <= utcnow())


def touch(conn: Connection, row: CredentialRow) -> None:
    """Record that the token was used, at most once a minute."""
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        _TOUCH.execute(conn, {"b_id": row.id, "b_now": now})


def use_registration(conn: Connection, row: CredentialRow) -> bool:
    """Count one registration; False when a single-use token was used already (compare-and-set)."""
    guard = or_(C.c.single_use.is_(False), C.c.uses == 0)
    res = conn.execute(update(C).where(C.c.id == row.id, guard).values(uses=C.c.uses + 1, last_used_at=utcnow()))
    return res.rowcount == 1


def agent_has_tokens(conn: Connection, agent_id: str) -> bool:
    query = select(func.count()).select_from(C).where(C.c.agent_id == agent_id, C.c.kind == TokenKind.agent.value)
    return bool(conn.execute(query).scalar_one())


CREDENTIALS_CHANGED = "credentials"
"""Wake-up key published (to every replica) when tokens are revoked: open agent channels check theirs."""


def delete_agent_tokens(conn: Connection, agent_id: str) -> int:
    res = conn.execute(delete(C).where(C.c.agent_id == agent_id, C.c.kind == TokenKind.agent.value))
    events.publish(conn, CREDENTIALS_CHANGED)
    return int(res.rowcount)


def existing_ids(conn: Connection, ids: set[int]) -> set[int]:
    """Which of the credential `ids` still exist (the others were revoked or their agent deleted)."""
    found = set[int]()
    for batch in in_batches(sorted(ids)):
        found.update(conn.execute(select(C.c.id).where(C.c.id.in_(batch))).scalars())
    return found


def list_tokens(conn: Connection, kind: TokenKind | None = None, agent_id: str | None = None) -> list[CredentialRow]:
    query = select(C).order_by(C.c.id)
    if kind is not None:
        query = query.where(C.c.kind == kind.value)
    if agent_id is not None:
        query = query.where(C.c.agent_id == agent_id)
    return list(conn.execute(query).all())


def get_token(conn: Connection, token_id: int) -> CredentialRow:
    row = conn.execute(select(C).where(C.c.id == token_id)).first()
    if row is None:
        raise NotFound(f"token not found: {token_id}")
    return row


def delete_token(conn: Connection, row: CredentialRow) -> None:
    conn.execute(delete(C).where(C.c.id == row.id))
    events.publish(conn, CREDENTIALS_CHANGED)
