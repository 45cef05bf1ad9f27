"""The CLI for schedules, file distribution and agent status, run as a CI job runs it (a subprocess with
only TIANGONG_URL and TIANGONG_TOKEN)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.e2e.cli_run import cli, one_json
from tests.e2e.harness import ADMIN, Cloud, wait_for


def test_schedule_lifecycle(cloud: Cloud) -> None:
    made = cli(cloud.url, ADMIN, "schedules", "create", "cli-nightly", "local", "echo from-cli", "--cron", "0 3 * * *",
               "--timezone", "Asia/Shanghai", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    schedule = one_json(made.stdout)
    assert schedule["cron"] == "0 3 * * *" and schedule["enabled"] is True and schedule["next_run_at"]
    listed = one_json(cli(cloud.url, ADMIN, "schedules", "list", "--name", "nightly", "--json").stdout)
    assert [s["name"] for s in listed["list"]] == ["cli-nightly"]
    table = cli(cloud.url, ADMIN, "schedules", "list")
    assert table.returncode == 0 and "cli-nightly" in table.stdout and "0 3 * * *" in table.stdout
    off = one_json(cli(cloud.url, ADMIN, "schedules", "disable", schedule["id"], "--json").stdout)
    assert off["enabled"] is False and off["next_run_at"] is None
    assert one_json(cli(cloud.url, ADMIN, "schedules", "enable", schedule["id"], "--json").stdout)["enabled"] is True
    bad = cli(cloud.url, ADMIN, "schedules", "create", "broken", "local", "true", "--cron", "61 * * * *", "--json")
    assert bad.returncode == 6 and "cron" in one_json(bad.stdout)["error"]
    gone = one_json(cli(cloud.url, ADMIN, "schedules", "delete", schedule["id"], "--json").stdout)
    assert gone == {"id": schedule["id"], "deleted": True}
    assert cli(cloud.url, ADMIN, "schedules", "get", schedule["id"]).returncode == 5


def test_once_schedule_fires_a_task_with_its_cron_source(cloud: Cloud) -> None:
    made = one_json(cli(cloud.url, ADMIN, "schedules", "create", "cli-once", "local", "echo fired", "--json").stdout)

    def fired() -> dict[str, object] | None:
        s = one_json(cli(cloud.url, ADMIN, "schedules", "get", made["id"], "--json").stdout)
        return s if s["last_task_id"] else None

    schedule = wait_for(fired, 30, "the @once schedule fired")
    task = cloud.wait_final(str(schedule["last_task_id"]))
    assert task["cron_source"] == "cli-once" and task["result"] == "fired\n"


def test_files_distribute_and_agent_status(cloud: Cloud, tmp_path: Path) -> None:
    source = tmp_path / "app.conf"
    source.write_text("port=8080\n")
    file_id = one_json(cli(cloud.url, ADMIN, "files", "upload", str(source), "--json").stdout)["id"]
    dest = tmp_path / "placed" / "app.conf"
    made = cli(cloud.url, ADMIN, "files", "distribute", file_id, "--agent", "local", "--path", str(dest), "--mode",
               "0600", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    tasks = one_json(made.stdout)["tasks"]
    assert [t["agent_id"] for t in tasks] == ["local"]
    assert cloud.wait_final(tasks[0]["id"])["status"] == "success"
    assert hashlib.md5(dest.read_bytes()).hexdigest() == hashlib.md5(b"port=8080\n").hexdigest()
    assert dest.stat().st_mode & 0o777 == 0o600
    unknown = cli(cloud.url, ADMIN, "files", "distribute", file_id, "--agent", "ghost", "--path", str(dest), "--json")
    assert unknown.returncode == 5 and "ghost" in one_json(unknown.stdout)["error"]

    status = one_json(cli(cloud.url, ADMIN, "agents", "status", "local", "--json").stdout)
    assert status["id"] == "local" and status["status"] == "online" and status["pending"] >= 0
