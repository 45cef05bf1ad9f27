"""The agent's command policy (its config file's `policy:` section): the task types it advertises, and the
policy each task is checked against before its executor starts. See docs/command-policy.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config import AgentConfig, PolicyConfig
from executors.policy import CommandPolicy


def served_types(config: AgentConfig, known: list[str]) -> list[str]:
    """The types this agent registers with: `known` without refuse_types, and only allow_types when set."""
    policy = config.policy
    allowed = None if policy.allow_types is None else set(policy.allow_types)
    return [t for t in known if t not in policy.refuse_types and (allowed is None or t in allowed)]


def agent_policy(config: AgentConfig | Mapping[str, Any]) -> CommandPolicy:
    """The policy of an agent config, or of its dump without connections (what TaskContext.config holds)."""
    if isinstance(config, AgentConfig):
        return config.policy.command_policy()
    return PolicyConfig.model_validate(config.get("policy") or {}).command_policy()
