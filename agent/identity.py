"""The agent's credentials: the token it was configured with, and the agent token (tga_...) the cloud gave it
at registration, kept in `<data_dir>/identity.json` (0600) so a restart registers with it again.

The configured token is a registration token (tgr_..., or an older shared agent token), or already an agent
token (tga_..., e.g. a Kubernetes Secret shared by the replicas of one agent id): then nothing is saved.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from agent.private import FILE_MODE, private_dir

log = logging.getLogger("tiangong.agent")

AGENT_PREFIX = "tga_"


class Identity:
    """Which token this agent process sends, and when it registers with which."""

    def __init__(self, data_dir: Path, server: str, agent_id: str, configured: str) -> None:
        self.path = data_dir / "identity.json"
        self.server, self.agent_id, self.configured = server, agent_id, configured
        self.saved = self._load()

    @property
    def is_agent_token(self) -> bool:
        """The configured token is this agent's own (tga_): registration only refreshes the row."""
        return self.configured.startswith(AGENT_PREFIX)

    def first_token(self) -> str:
        """The token to register with first: the saved agent token, else the configured one."""
        return self.saved or self.configured

    def can_fall_back(self, refused: str) -> bool:
        """When `refused` (a saved agent token) is refused, registering anew with the configured token may
        help (the agent was deleted, its token revoked, or the cloud's database is new)."""
        return refused != self.configured

    def save(self, token: str) -> None:
        """Keep the agent token the cloud handed out, for this server and agent id."""
        private_dir(self.path.parent)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"server": self.server, "agent_id": self.agent_id, "agent_token": token}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.saved = token

    def forget(self) -> None:
        """The saved token was refused: drop it."""
        self.saved = None
        self.path.unlink(missing_ok=True)

    def _load(self) -> str | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return None
        # Saved for another agent id: register anew. The server's URL may change (a port, a load balancer):
        # a token another cloud does not know is refused, and the agent then registers anew.
        if not isinstance(data, dict) or data.get("agent_id") != self.agent_id:
            return None
        token = data.get("agent_token")
        return token if isinstance(token, str) and token.startswith(AGENT_PREFIX) else None
