"""The command policy end to end: the cloud refuses a denied command at creation (403 naming the rule,
nothing stored); an agent refuses what its own config denies before anything runs (the task fails naming
the rule, no process starts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import Cloud


def stored(cloud: Cloud) -> int:
    return int(cloud.sql("SELECT count(*) FROM tasks")[0][0])


def test_the_cloud_refuses_a_denied_command_naming_the_rule(cloud: Cloud, tmp_path: Path) -> None:
    before = stored(cloud)
    # Harmless should they run all the same (`false &&`, `if False`): a failing test must not reboot anything.
    refused: list[tuple[dict[str, Any], str]] = [
        ({"type": "shell", "command": "cd /tmp && false && sudo id"}, "sudo"),
        ({"type": "shell", "command": "false && rm -rf --no-preserve-root /"}, "rm-root"),
        ({"type": "execute", "params": {"cmd": "/usr/bin/sudo", "args": ["--version"]}}, "sudo"),
        ({"type": "python", "command": "import os\nif False:\n    os.system('reboot')"}, "shutdown"),
    ]
    for body, rule in refused:
        r = cloud.create(**body)
        assert r.status_code == 403, r.text
        assert r.json()["rule"] == rule
        assert f"policy rule {rule!r}" in r.json()["error"]
    assert stored(cloud) == before
    target = tmp_path / "x"
    target.mkdir()
    task = cloud.run(type="shell", command=f"rm -rf {target}")
    assert task["status"] == "success"
    assert not target.exists()


@pytest.fixture(scope="module")
def strict(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An agent `strict` whose config denies curl and refuses python tasks, which the cloud allows."""
    config = tmp_path_factory.mktemp("strict") / "agent.yaml"
    config.write_text(yaml.safe_dump({"policy": {"deny": {"no-curl": r"\bcurl\b"}, "refuse_types": ["python"]}}))
    cloud.agent("strict", TIANGONG_AGENT_CONFIG=str(config))
    return "strict"


def test_an_agent_refuses_a_command_its_config_denies(cloud: Cloud, strict: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    task = cloud.run(
        agent_id=strict, type="shell", command=f"touch {marker} && curl --version", max_retries=2, retry_on="any"
    )
    assert task["status"] == "failed" and task["attempts"] == 1  # a refusal is final: retrying cannot help
    assert task["error"] == "refused by the agent's policy: command refused by policy rule 'no-curl'"
    assert task["exit_code"] is None
    assert not marker.exists()  # no process ran
    system = [ln["message"] for ln in cloud.logs(task["id"]) if ln["stream"] == "system"]
    assert system == [task["error"]]
    ok = cloud.run(agent_id=strict, type="shell", command=f"touch {marker}")
    assert ok["status"] == "success"
    assert marker.exists()


def test_an_agent_never_runs_a_type_its_config_refuses(cloud: Cloud, strict: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = cloud.create(agent_id=strict, type="python", command=f"open({str(marker)!r}, 'w')", sync=True, timeout=60)
    # The agent left python out of the types it registered (agent.policy.served_types).
    assert r.status_code == 409 and "cannot run 'python'" in r.json()["error"], r.text
    assert not marker.exists()
