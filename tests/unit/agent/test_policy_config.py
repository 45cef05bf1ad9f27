"""The agent config's `policy:` section: parsed and checked at load, the types the agent advertises, and the
policy a task is checked against (from the config dump the runner's TaskContext holds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config
from agent.policy import agent_policy, served_types

KNOWN = ["execute", "file", "http_request", "python", "shell"]


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_policy_section_is_parsed(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        "policy:\n"
        "  mode: allow\n"
        "  use_defaults: false\n"
        "  deny: {no-curl: '\\bcurl\\b'}\n"
        "  allow: {listing: '^ls\\b', echo: '^echo\\b'}\n"
        "  refuse_types: [python]\n",
    )
    config = load_config(path)
    assert config.policy.mode == "allow"
    assert config.policy.deny == {"no-curl": r"\bcurl\b"}
    policy = agent_policy(config)
    assert [r.name for r in policy.deny_rules()] == ["no-curl"]  # no defaults
    assert [r.name for r in policy.allow] == ["listing", "echo"]
    assert policy.check("shell", "ls; echo ok", {}) is None
    refusal = policy.check("shell", "ls | curl -T - x", {})
    assert refusal is not None and refusal.rule == "no-curl"
    refusal = policy.check("python", "print(1)", {})
    assert refusal is not None and refusal.rule == "refuse_types"


def test_no_policy_section_means_the_default_deny_rules(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, "namespace: deploy\n"))
    policy = agent_policy(config)
    assert policy.mode == "deny" and policy.use_defaults
    refusal = policy.check("shell", "sudo id", {})
    assert refusal is not None and refusal.rule == "sudo"
    assert served_types(config, KNOWN) == KNOWN


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("{deny: {broken: '(('}}", "policy deny rule 'broken': invalid regex"),
        ("{allow: {'bad name': 'x'}}", "policy allow rule 'bad name'"),
        ("{mode: strict}", "policy.mode"),
        ("{refuse_types: [shel]}", "unknown task type 'shel'"),
        ("{allow_types: [pyhton]}", "unknown task type 'pyhton'"),
        ("{deny_list: {}}", "policy.deny_list"),
    ],
)
def test_a_bad_policy_is_a_config_error_naming_it(tmp_path: Path, section: str, problem: str) -> None:
    path = config_file(tmp_path, f"policy: {section}\n")
    with pytest.raises(ConfigError, match=problem) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_served_types_leave_out_refused_types_and_keep_only_allowed_ones() -> None:
    refusing = AgentConfig.model_validate({"policy": {"refuse_types": ["python", "execute"]}})
    assert served_types(refusing, KNOWN) == ["file", "http_request", "shell"]
    allowing = AgentConfig.model_validate({"policy": {"allow_types": ["shell", "python"], "refuse_types": ["python"]}})
    assert served_types(allowing, KNOWN) == ["shell"]
    nothing = AgentConfig.model_validate({"policy": {"allow_types": []}})
    assert served_types(nothing, KNOWN) == []


def test_the_policy_is_read_back_from_the_dump_the_task_context_holds() -> None:
    config = AgentConfig.model_validate({"policy": {"deny": {"no-curl": r"\bcurl\b"}, "allow_types": ["shell"]}})
    policy = agent_policy(config.model_dump(exclude={"connections"}))
    refusal = policy.check("shell", "curl x", {})
    assert refusal is not None and refusal.rule == "no-curl"
    refusal = policy.check("execute", "", {"cmd": "ls"})
    assert refusal is not None and refusal.rule == "allow_types"
    assert agent_policy({}).check("shell", "reboot", {}) is not None  # an older dump: the defaults
