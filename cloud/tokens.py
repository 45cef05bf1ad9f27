"""The bootstrap tokens: the admin token and the bootstrap registration token (TIANGONG_AGENT_TOKEN), from
settings, else generated once and kept (mode 0600) in the data dir. Every other token is a credential in
the database (cloud.services.credentials)."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from files.private import FILE_MODE, private_dir, private_file

log = logging.getLogger("tiangong.cloud")


@dataclass(frozen=True)
class Tokens:
    admin: str
    agent: str
    """The bootstrap registration token (named `agent` as its setting, TIANGONG_AGENT_TOKEN, is)."""


def _load_or_create(path: Path, given: SecretStr | None, label: str, prefix: str = "") -> str:
    if given is not None and given.get_secret_value():
        return given.get_secret_value()
    if path.exists():
        private_file(path)  # an older version's file, or one made by hand
        return path.read_text().strip()
    token = prefix + secrets.token_urlsafe(32)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    # Printed once, when generated; afterwards it is read from the file.
    print(f"tiangong: generated {label} token {token} (saved to {path})", flush=True)
    return token


def load_tokens(data_dir: Path, admin: SecretStr | None, agent: SecretStr | None) -> Tokens:
    """Resolve both tokens, generating the missing ones."""
    return Tokens(
        admin=_load_or_create(data_dir / "admin.token", admin, "admin"),
        agent=_load_or_create(data_dir / "agent.token", agent, "registration", "tgr_"),
    )
