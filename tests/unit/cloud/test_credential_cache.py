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
from cloud.services.agents import register_agent
from cloud.services.errors import Forbidden
from cloud.tokens import Tokens
from wire.agents import AgentRegister
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


@pytest.mark.parametrize("wake", ["credentials changed", "listener back"])
def test_a_wake_up_from_another_replica_empties_the_cache_at_its_next_use(db: Database, wake: str) -> None:
    """No task runs here: the cache empties itself on the wake-up (a revocation's, or every waiter's when a
    listener comes back after missing some), at the next use after it."""
    cache = CredentialCache(db, BOOTSTRAP, ttl=3600)
    token_id, token = _token(db)
    cache.resolve(token)
    _revoke_behind_the_cache(db, token_id)
    if wake == "credentials changed":
        db.hub.publish([creds.CREDENTIALS_CHANGED])  # what a revocation's commit (or its NOTIFY) publishes
    else:
        db.hub.wake_all()
    with pytest.raises(HTTPException) as refused:
        cache.resolve(token)
    assert refused.value.status_code == 401


def test_a_single_use_token_cached_before_its_use_registers_once(db: Database) -> None:
    """Cached before its use, the token still resolves, but the second registration is refused by the use's
    compare-and-set; read from the database after its use, the token itself is refused (401, used up)."""
    _, token = _token(db, kind="registration", single_use=True, agents=[], types=[], can=[])
    cached = CredentialCache(db, BOOTSTRAP, ttl=3600)
    with db.transaction() as conn:
        register_agent(conn, AgentRegister(agent_id="once-1", executors=["shell"]), cached.resolve(token))
    with pytest.raises(Forbidden, match="used up"), db.transaction() as conn:
        register_agent(conn, AgentRegister(agent_id="once-2", executors=["shell"]), cached.resolve(token))
    with pytest.raises(HTTPException) as refused:
        CredentialCache(db, BOOTSTRAP, ttl=3600).resolve(token)
    assert (refused.value.status_code, refused.value.detail) == (401, "registration token used up (it was single-use)")
