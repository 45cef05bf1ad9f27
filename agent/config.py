"""The agent's config file (YAML, path from TIANGONG_AGENT_CONFIG): named connections and integrations.

```yaml
connections:            # used by database tasks through params.connection
  default: {type: mysql, host: db1, port: 3306, user: app, password: s3cret, database: shop}
goinception_url: mysql://user:password@127.0.0.1:4000   # mysql tasks then run through goInception
goinception_backup: {host: 10.0.0.9, port: 3306, user: gi_backup, password: s3cret}  # its backup_* config
kubeconfig: /etc/tiangong/kubeconfig                     # k8s tasks outside a pod
context: prod
namespace: deploy                                         # k8s default namespace of this agent
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class AgentConfig(BaseModel):
    """The file's schema; unknown top-level keys are refused so a typo does not pass silently."""

    model_config = ConfigDict(extra="forbid")

    connections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    goinception_url: str | None = None
    goinception_backup: dict[str, Any] | None = Field(
        None, description="goInception's backup server (host, port, user, password): rollback SQL is read there."
    )
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file and the problem."""


def load_config(path: Path | None) -> AgentConfig:
    """Read and check the file; no path means an empty config."""
    if path is None:
        return AgentConfig()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"agent config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"agent config {path}: not valid YAML ({exc})") from exc
    if raw is None:
        return AgentConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"agent config {path}: expected a mapping at the top level")
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"agent config {path}: {problems}") from exc
