"""cloud.api.auth.CredentialCache: a looked-up token is trusted for `ttl` while this replica hears every
revocation's wake-up, and looked up at every use while it may miss one."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from sqlalchemy import delete

from cloud.api.auth import CredentialCache
from cloud.db.engine import Database
from cloud.db.models import CREDENTIALS as C
from cloud.services import credentials as creds
from cloud.tokens import Tokens
from wire.credentials import TokenCreate

BOOTSTRAP = Tokens(admin="admin-token", agent="bootstrap-token")


def _token(db: Database, **fields: object) -> tuple[int, bytes]:
    body = {"name": "ci", "agents": ["*"], "types": ["*"], "can": ["read"], **fields}
    with db.transaction() as conn:
        row, token = creds.create_token(conn, TokenCreate.model_validate(body), "test")
    return int(row.id), token.encode()


def _revoke_behind_the_cache(db: Database, token_id: int) -> None:
    """Delete the row as another replica would, with no wake-up reaching this one."""
    with db.transaction() as conn:
        conn.execute(delete(C).where(C.c.id == token_id))


def test_a_cached_token_is_trusted_while_every_wake_up_is_heard_and_looked_up_when_one_may_be_missed(
    db: Database,
) -> None:
    cache = CredentialCache(db, BOOTSTRAP, ttl=3600)
    token_id, token = _token(db)
    assert cache.resolve(token).name == "ci"
    _revoke_behind_the_cache(db, token_id)
    # Heard-everything: the revocation's wake-up would have cleared the cache, so the hit stands meanwhile.
    assert cache.resolve(token).name == "ci"
    db.hub.complete = False  # a PostgreSQL listener reconnecting: a revocation may go unheard
    with pytest.raises(HTTPException) as refused:
        cache.resolve(token)
    assert refused.value.status_code == 401


def test_clearing_the_cache_refuses_a_revoked_token_at_once(db: Database) -> None:
    cache = CredentialCache(db, BOOTSTRAP, ttl=3600)
    token_id, token = _token(db)
    cache.resolve(token)
    _revoke_behind_the_cache(db, token_id)
    cache.clear()  # what the revocation's wake-up does on every replica
    with pytest.raises(HTTPException) as refused:
        cache.resolve(token)
    assert refused.value.status_code == 401


def test_a_used_up_single_use_token_is_refused_whether_cached_or_read(db: Database) -> None:
    """Cached before its use, the second registration itself is refused (the use is a compare-and-set, 403
    from the registration); read from the database after it, the token is refused: 401, used up."""
    token_id, token = _token(db, kind="registration", single_use=True, agents=[], types=[], can=[])
    cached = CredentialCache(db, BOOTSTRAP, ttl=3600)
    cached.resolve(token)
    with db.transaction() as conn:
        assert creds.use_registration(conn, creds.get_token(conn, token_id))
        assert not creds.use_registration(conn, creds.get_token(conn, token_id))
    with pytest.raises(HTTPException) as refused:
        CredentialCache(db, BOOTSTRAP, ttl=3600).resolve(token)
    assert (refused.value.status_code, refused.value.detail) == (401, "registration token used up (it was single-use)")
