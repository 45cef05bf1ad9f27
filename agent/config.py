"""The agent's config file (YAML, path from TIANGONG_AGENT_CONFIG): named connections and integrations.

```yaml
connections:            # used by database tasks through params.connection
  default: {type: mysql, host: db1, port: 3306, user: app, password: s3cret, database: shop}
goinception_url: mysql://user:password@127.0.0.1:4000   # mysql tasks then run through goInception
goinception_backup: {host: 10.0.0.9, port: 3306, user: gi_backup, password: s3cret}  # its backup_* config
kubeconfig: /etc/tiangong/kubeconfig                     # k8s tasks outside a pod
context: prod
namespace: deploy                                         # k8s default namespace of this agent
policy:                 # command policy checked before a task runs (docs/command-policy.md)
  mode: deny            # deny | allow | off
  deny: {no-curl: '\\bcurl\\b'}  # name: regex, searched in each command
  refuse_types: [python]
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from executors.policy import CommandPolicy
from executors.registry import known_types


class PolicyConfig(BaseModel):
    """The config file's `policy:` section: what this agent refuses to run, whatever the cloud allows."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["deny", "allow", "off"] = Field(
        "deny", description="deny: refuse commands matching a deny rule; allow: also those matching no allow rule."
    )
    use_defaults: bool = Field(True, description="Use the built-in deny rules (sudo, rm -rf /, mkfs, reboot...).")
    deny: dict[str, str] = Field(default_factory=dict, description="More deny rules, {name: regex}.")
    allow: dict[str, str] = Field(default_factory=dict, description="Allow rules for mode allow, {name: regex}.")
    allow_types: list[str] | None = Field(None, description="When set, the only task types this agent runs.")
    refuse_types: list[str] = Field(default_factory=list, description="Task types this agent never runs.")

    @field_validator("allow_types", "refuse_types")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        # A misspelt type would refuse nothing: name it instead.
        known = known_types()
        for name in value or []:
            if name not in known:
                raise ValueError(f"unknown task type {name!r}; known types: {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _compiles(self) -> PolicyConfig:
        self.command_policy()  # a bad regex is a ValueError naming its rule
        return self

    def command_policy(self) -> CommandPolicy:
        """The policy this section describes."""
        return CommandPolicy.from_settings(
            self.mode, self.use_defaults, self.deny, self.allow, self.refuse_types, self.allow_types
        )


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
    policy: PolicyConfig = Field(default_factory=PolicyConfig)


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
