"""Idempotency keys: a `request_id` (or `Idempotency-Key` header) names one task request. Repeating it with
the same request returns the task created the first time; reusing it for a different request is refused,
rather than silently dropping the new body.

"The same request" is the task as asked for: every field of TaskCreate except the wait options (`sync`,
`timeout`, which only shape the answer) and the key itself. A new TaskCreate field is part of the request
by default. The fields are compared through a fingerprint stored with the task: SHA-256 of their
canonical JSON. Sealed secrets (see cloud.sealing) enter the fingerprint only as a fixed marker, so the
column is no offline oracle for a weak password; they are compared by unsealing the stored task instead.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cloud.sealing import SEALED, Sealer, Unsealable
from wire.tasks import TaskCreate

NOT_THE_REQUEST = frozenset({"sync", "timeout", "request_id"})
"""TaskCreate fields that do not make a task different: how long to wait for it, and the key itself."""

FLEET_FIELDS = ("agent_selector", "max_concurrency", "max_errors")

_BLIND = {SEALED: "*"}


def _blind(value: Any) -> Any:
    """The structure with every sealed value replaced by one fixed marker (sealing is randomised)."""
    if isinstance(value, dict):
        if set(value) == {SEALED}:
            return _BLIND
        return {k: _blind(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blind(v) for v in value]
    return value


def fingerprint(req: TaskCreate, sealed_params: Any, sealed_env: Any) -> str:
    """Hex SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of the task request, given the
    params and env as they will be stored."""
    # Fleet fields (docs/fleet.md) count only when given: a one-agent task keeps the fingerprint it had.
    unset = {name for name in FLEET_FIELDS if getattr(req, name) is None}
    doc = req.model_dump(mode="json", exclude=set(NOT_THE_REQUEST) | unset)
    doc["params"] = _blind(sealed_params)
    doc["env"] = _blind(sealed_env)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def same_request(existing: Any, req: TaskCreate, print_: str, sealer: Sealer) -> bool:
    """Whether `req` repeats the request that created `existing` (a tasks row).

    A task stored before fingerprints existed (NULL) matches any request: that is how such keys behaved
    when they were created. A sealed secret that this cloud can no longer unseal (key rotated away) is
    judged by the fingerprint alone."""
    if existing.request_fingerprint is None:
        return True
    if existing.request_fingerprint != print_:
        return False
    try:
        return bool(sealer.unseal(existing.params) == req.params and sealer.unseal(existing.env) == req.env)
    except Unsealable:
        return True
