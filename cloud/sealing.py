"""Secrets inside task params and env are sealed (Fernet) before they are stored.

The database then holds no password, token or Authorization header in clear: a backup, a replica or a
`SELECT` shows ciphertext. Only the assignment sent to the agent (over its authenticated connection)
carries the clear values. The key comes from TIANGONG_SECRET_KEY (share it between replicas), else it is
generated once into `<data_dir>/secret.key` (mode 0600).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from wire.secrets import is_secret_key

SEALED = "$sealed"


class Sealer:
    """Seal and unseal the secret-named values of a params/env structure."""

    def __init__(self, keys: list[bytes]) -> None:
        # Several keys: the first seals, all unseal, so a key can be rotated without losing queued tasks.
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: self._seal_one(v) if is_secret_key(str(k)) and v not in (None, "") else self.seal(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.seal(v) for v in value]
        return value

    def unseal(self, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {SEALED}:
                return self._open(value[SEALED])
            return {k: self.unseal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.unseal(v) for v in value]
        return value

    def _seal_one(self, value: Any) -> dict[str, str]:
        if isinstance(value, dict) and set(value) == {SEALED}:
            return value  # already sealed
        return {SEALED: self._fernet.encrypt(json.dumps(value).encode()).decode()}

    def _open(self, token: str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            # Sealed with a key this cloud does not have: the agent gets no secret rather than garbage.
            return None


def load_sealer(data_dir: Path, configured: SecretStr | None) -> Sealer:
    """The sealer from the configured key(s) (comma-separated, newest first), else the data dir's key file."""
    if configured is not None and configured.get_secret_value().strip():
        return Sealer([k.strip().encode() for k in configured.get_secret_value().split(",") if k.strip()])
    path = data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this cloud made it first
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key() + b"\n")
    return Sealer([path.read_bytes().strip()])
