"""Agent settings, from TIANGONG_* environment variables or the command line."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("tiangong.agent")


class AgentSettings(BaseSettings):
    """Everything one agent process can be configured with."""

    model_config = SettingsConfigDict(env_prefix="TIANGONG_", extra="ignore")

    server: str = Field("http://127.0.0.1:8080", description="The cloud's base URL.")
    agent_id: str = Field("local", min_length=1, max_length=128, description="The agent id tasks name.")
    agent_token: SecretStr = Field(SecretStr(""), description="The cloud's agent token.")
    agent_token_file: Path | None = Field(
        None,
        description="A file holding the agent token, instead of TIANGONG_AGENT_TOKEN: it then appears in neither "
        "the agent's environment nor its command line, which its tasks could read.",
    )
    max_concurrency: int = Field(4, ge=1, le=1000, description="Tasks run at once by this process.")
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels, k=v.")
    data_dir: Path = Field(Path("./agent-data"), description="Working directory and caches of this agent.")
    claim_wait_seconds: float = Field(25.0, gt=0, le=60, description="Long-poll wait of one claim.")
    agent_channel: Literal["auto", "websocket", "http"] = Field(
        "auto",
        description="How claims, heartbeats, log batches and results travel: `websocket` over one persistent "
        "channel, `http` as long-poll requests, `auto` the channel when the cloud offers it, else HTTP (tried "
        "again every few minutes).",
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, running tasks get this long to finish before being canceled."
    )
    log_flush_seconds: float = Field(0.05, gt=0, description="Log lines are shipped at least this often.")
    log_batch_lines: int = Field(
        5000,
        ge=1,
        le=10_000,
        description="A batch is shipped once it has this many lines (or a MiB of text, whichever comes first).",
    )
    agent_config: Path | None = Field(
        None, description="YAML file with named connections, goinception_url, kubeconfig (TIANGONG_AGENT_CONFIG)."
    )

    @field_validator("server")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _token_from_file(self) -> Self:
        if self.agent_token_file is None:
            return self
        if self.agent_token.get_secret_value():
            raise ValueError(
                "agent token: give either a token (--token, TIANGONG_AGENT_TOKEN) or a token file "
                "(--token-file, TIANGONG_AGENT_TOKEN_FILE), not both"
            )
        self.agent_token = SecretStr(read_token_file(self.agent_token_file))
        return self


def read_token_file(path: Path) -> str:
    """The token in `path` (surrounding whitespace dropped); ValueError naming the file when unusable.

    `/dev/fd/<n>` is a pipe from `tiangong up`: it is closed once read, so it is not left open.
    """
    try:
        if path.stat().st_mode & 0o077 and path.is_file():
            log.warning("agent token file %s is readable by the group or others: make it 0600", path)
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"agent_token_file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    finally:
        if path.parent == Path("/dev/fd") and path.name.isdigit() and int(path.name) > 2:
            with contextlib.suppress(OSError):
                os.close(int(path.name))
    if not token:
        raise ValueError(f"agent_token_file: {path} is empty")
    return token


def parse_labels(items: list[str]) -> dict[str, str]:
    """`["k=v", "a=b"]` -> dict; raises ValueError naming a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"labels: expected k=v, got {part!r}")
            out[key.strip()] = value.strip()
    return out
