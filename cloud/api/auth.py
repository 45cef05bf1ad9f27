"""Bearer token -> Principal: the bootstrap tokens from settings, else a credential looked up by its
SHA-256 and trusted for `token_cache_seconds` by this replica while it hears every revocation."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from fastapi import HTTPException

from cloud.access import ADMIN, Principal
from cloud.db.engine import Database
from cloud.db.types import utcnow
from cloud.services import credentials as creds
from cloud.tokens import Tokens
from wire.credentials import Scope, TokenKind

BOOTSTRAP_REGISTRATION = Principal(
    kind=TokenKind.registration, name="bootstrap registration token", scope=Scope(agents=["*"])
)
"""The settings' agent token (TIANGONG_AGENT_TOKEN): registers any agent id, never expires."""


def unauthorized(message: str = "invalid token") -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


@dataclass
class _Hit:
    at: float
    principal: Principal
    expires: float | None  # time.time() when the credential expires


class CredentialCache:
    """Tokens this replica has looked up, trusted for `ttl` seconds.

    A revocation (a token or an agent deleted) publishes credentials.CREDENTIALS_CHANGED at its commit, on this
    replica's hub and (NOTIFY on PostgreSQL) every other one's: the cache holds a subscription to it and
    empties itself at its next use after one, with no task in between. The listener's return after an outage
    wakes every subscription, so it clears the cache too; while the listener is away (`hub.complete` false)
    each use is looked up again.
    A listener that dies without its connection failing (a network gone silent) is what `ttl` still bounds;
    the listener's TCP keepalives (cloud.db.notify) find that within about half a minute.
    A single-use registration token cached before its use is still refused a second registration: the use is
    counted by a compare-and-set (credentials.use_registration).
    """

    def __init__(self, db: Database, tokens: Tokens, ttl: float, bootstrap_registration: bool = True) -> None:
        self.db, self.tokens, self.ttl = db, tokens, ttl
        self.bootstrap_registration = bootstrap_registration
        self._hits: dict[str, _Hit] = {}
        self._changed = db.hub.subscribe(creds.CREDENTIALS_CHANGED)
        """Pending once credentials changed on any replica, or a wake-up may have been missed."""

    def resolve(self, token: bytes) -> Principal:
        """The principal behind `token`, or 401."""
        if secrets.compare_digest(token, self.tokens.admin.encode("utf-8")):
            return ADMIN
        if secrets.compare_digest(token, self.tokens.agent.encode("utf-8")):
            if not self.bootstrap_registration:
                raise unauthorized("the bootstrap registration token is turned off (bootstrap_registration)")
            return BOOTSTRAP_REGISTRATION
        hashed = creds.token_hash(token)
        now = time.monotonic()
        if self._changed.pending:
            self._changed.clear()
            self._hits.clear()
        hit = self._hits.get(hashed)
        if hit is not None and now - hit.at < self.ttl and self.db.hub.complete:
            # The cloud's clock (the database's), as the lookup's own expiry check reads it.
            if hit.expires is not None and hit.expires <= utcnow().timestamp():
                raise unauthorized("token expired")
            return hit.principal
        with self.db.transaction() as conn:
            row = creds.find(conn, hashed)
            if row is None:
                self._hits.pop(hashed, None)
                raise unauthorized()
            if creds.is_expired(row):
                raise unauthorized("token expired")
            if row.single_use and row.uses > 0:
                raise unauthorized("registration token used up (it was single-use)")
            creds.touch(conn, row)
        expires = row.expires_at.timestamp() if row.expires_at is not None else None
        principal = Principal(
            kind=TokenKind(row.kind),
            name=row.name,
            credential_id=row.id,
            agent_id=row.agent_id,
            scope=Scope.model_validate(row.scope or {}),
            expires=expires,
        )
        if len(self._hits) > 10_000:  # tokens sprayed at us must not grow this without bound
            self._hits.clear()
        self._hits[hashed] = _Hit(now, principal, expires)
        return principal
