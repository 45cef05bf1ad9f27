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

from files.private import FILE_MODE, private_dir, private_file
from wire.secrets import is_secret_key

SEALED = "$sealed"


class Unsealable(ValueError):
    """A sealed value this cloud cannot open (sealed with another key, or not ours at all)."""


def find_sealed_marker(value: Any, path: str = "") -> str | None:
    """Where a caller's own data uses our `$sealed` marker (refused: it would pass for a sealed secret)."""
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if k == SEALED:
                return here
            found = find_sealed_marker(v, here)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = find_sealed_marker(v, f"{path}[{i}]")
            if found:
                return found
    return None


class Sealer:
    """Seal and unseal the secret-named values of a params/env structure."""

    def __init__(self, keys: list[bytes]) -> None:
        # Several keys: the first seals, all unseal, so a key can be rotated without losing queued tasks.
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, value: Any, extra: frozenset[str] = frozenset()) -> Any:
        """A copy with every secret-named value sealed, and the values of the keys named in `extra`
        (a task's `params.secret_keys`)."""
        if isinstance(value, dict):
            return {
                k: self._seal_one(v)
                if (is_secret_key(str(k)) or str(k) in extra) and v not in (None, "")
                else self.seal(v, extra)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.seal(v, extra) for v in value]
        return value

    def unseal(self, value: Any) -> Any:
        """The clear structure; raises Unsealable when a sealed value cannot be opened."""
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

    def _open(self, token: Any) -> Any:
        try:
            return json.loads(self._fernet.decrypt(str(token).encode()))
        except (InvalidToken, ValueError, TypeError) as exc:
            raise Unsealable(
                "a secret in this task cannot be unsealed: it was sealed with another key (TIANGONG_SECRET_KEY)"
            ) from exc


def load_sealer(data_dir: Path, configured: SecretStr | None) -> Sealer:
    """The sealer from the configured key(s) (comma-separated, newest first), else the data dir's key file."""
    if configured is not None and configured.get_secret_value().strip():
        return Sealer([k.strip().encode() for k in configured.get_secret_value().split(",") if k.strip()])
    path = data_dir / "secret.key"
    if not path.exists():
        private_dir(path.parent)
        # Written whole under another name, then linked into place: a process starting at the same moment
        # sees either no file or the complete key, and the first link wins.
        tmp = path.with_name(f".secret.key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    private_file(path)  # an older version's key, or one put there by hand
    return Sealer([path.read_bytes().strip()])
