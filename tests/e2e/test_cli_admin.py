"""`tiangong token|agents|audit`: an operator makes a scoped token, a CI job uses it, the operator revokes it
and reads the audit log, all through the CLI against a real cloud."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.harness import ADMIN, ROOT, Cloud


def _cli(cloud: Cloud, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cli.main", *args, "--server", cloud.url, "--token", token]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_scoped_token_from_the_cli_works_within_its_scope_until_revoked(cloud: Cloud) -> None:
    made = _cli(cloud, ADMIN, "token", "create", "--name", "cli-ci", "--agents", "loc*", "--types", "shell",
                "--can", "create,read", "--expires", "1d")  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("tgp_") and "shown once" in made.stderr

    ran = _cli(cloud, token, "task", "run", "local", "echo from-ci")
    assert ran.returncode == 0 and "from-ci" in ran.stdout, ran.stderr
    refused = _cli(cloud, token, "task", "run", "local", "print(1)", "--type", "python")
    assert refused.returncode == 4 and "403" in refused.stderr and "'python'" in refused.stderr

    listed = _cli(cloud, ADMIN, "token", "list")
    line = next(ln for ln in listed.stdout.splitlines() if " cli-ci " in ln)
    assert token not in listed.stdout and token[:8] in line and " shell " in line and "never" not in line
    token_id = line.split()[0]

    assert _cli(cloud, token, "token", "list").returncode == 4  # not an admin token
    assert _cli(cloud, ADMIN, "token", "delete", token_id).returncode == 0
    gone = _cli(cloud, token, "task", "run", "local", "echo again")
    assert gone.returncode == 4 and "401" in gone.stderr

    audit = _cli(cloud, ADMIN, "audit", "list", "--actor", "cli-ci")
    assert "task.create" in audit.stdout and token not in audit.stdout
    audit = _cli(cloud, ADMIN, "audit", "list", "--action", "token")
    assert "token.create" in audit.stdout and "token.delete" in audit.stdout


def test_agents_from_the_cli(cloud: Cloud) -> None:
    listed = _cli(cloud, ADMIN, "agents", "list")
    assert listed.returncode == 0 and "local" in listed.stdout and "online" in listed.stdout
    issued = _cli(cloud, ADMIN, "agents", "token", "cli-pool", "--expires", "90d")
    assert issued.returncode == 0 and issued.stdout.strip().startswith("tga_")
    missing = _cli(cloud, ADMIN, "agents", "disable", "no-such-agent")
    assert missing.returncode == 5 and "404" in missing.stderr
