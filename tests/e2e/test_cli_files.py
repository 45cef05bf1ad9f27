"""`tiangong files ...` and `tiangong agents ...` as a CI job runs them: an artifact uploaded (streamed),
used by a task, listed and downloaded back with its MD5 checked; every command's --json."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_run import ci_env, cli, one_json
from tests.e2e.harness import ADMIN, ROOT, Cloud


@pytest.fixture(scope="module")
def backend() -> Iterator[None]:
    """The CLI speaks HTTP only: one backend (SQLite) is enough here."""
    yield None


_PEAK = """
import atexit, runpy, sys
report = sys.argv[1]
def peak():
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(ln for ln in status if ln.startswith("VmHWM:")).split()[1])
atexit.register(peak)
sys.argv = ["tiangong", *sys.argv[2:]]
runpy.run_module("cli.main", run_name="__main__")
"""


def _peak_memory(cloud: Cloud, tmp_path: Path, *args: str) -> tuple[int, int]:
    """Run `tiangong <args>`; its exit code and the most memory it held (VmHWM: this process image's own
    peak, not the forking test process's, which rusage would report)."""
    report = tmp_path / "peak"
    cmd = [sys.executable, "-c", _PEAK, str(report), *args]
    done = subprocess.run(cmd, cwd=ROOT, env=ci_env(cloud.url, ADMIN), capture_output=True, timeout=120)
    return done.returncode, int(report.read_text()) * 1024


def test_upload_run_list_download_round_trip(cloud: Cloud, tmp_path: Path) -> None:
    artifact = tmp_path / "app-1.0.tgz"
    size = 64 << 20
    with artifact.open("wb") as fh:
        for i in range(size >> 20):
            fh.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))  # 1 MiB, different each time
    md5 = hashlib.md5(artifact.read_bytes()).hexdigest()

    code, peak = _peak_memory(cloud, tmp_path, "files", "upload", str(artifact))
    assert code == 0 and peak < size, f"upload held {peak >> 20} MiB for a {size >> 20} MiB file"
    uploaded = cli(cloud.url, ADMIN, "files", "upload", str(artifact))  # again: the same content, kept once
    file_id = uploaded.stdout.strip()
    assert uploaded.returncode == 0 and file_id.startswith("file-") and "already stored" in uploaded.stderr
    assert one_json(cli(cloud.url, ADMIN, "files", "get", file_id, "--json").stdout)["md5"] == md5

    ran = cli(cloud.url, ADMIN, "task", "run", "local", 'md5sum < "$TIANGONG_FILE"', "--file-id", file_id)
    assert ran.returncode == 0 and ran.stdout.split()[0] == md5, ran.stderr

    listed = cli(cloud.url, ADMIN, "files", "list", "--q", "app-1.0")
    assert listed.returncode == 0 and file_id in listed.stdout and md5 in listed.stdout
    assert listed.stdout.splitlines()[0].split() == ["ID", "NAME", "SIZE", "MD5", "CREATED"]

    out = tmp_path / "back"
    out.mkdir()
    code, peak = _peak_memory(cloud, tmp_path, "files", "download", file_id, "-o", str(out))
    assert code == 0 and peak < size, f"download held {peak >> 20} MiB for a {size >> 20} MiB file"
    got = out / "app-1.0.tgz"
    assert hashlib.md5(got.read_bytes()).hexdigest() == md5 and os.listdir(out) == ["app-1.0.tgz"]

    missing = cli(cloud.url, ADMIN, "files", "download", "file-999999", "-o", str(out))
    assert missing.returncode == 5 and os.listdir(out) == ["app-1.0.tgz"]


def test_files_and_agents_commands_print_one_json_document(cloud: Cloud, tmp_path: Path) -> None:
    note = tmp_path / "notes.txt"
    note.write_text("release notes\n")
    uploaded = one_json(cli(cloud.url, ADMIN, "files", "upload", str(note), "--json").stdout)
    assert uploaded["created"] is True and uploaded["md5"] == hashlib.md5(b"release notes\n").hexdigest()
    file_id = uploaded["id"]
    listed = one_json(cli(cloud.url, ADMIN, "files", "list", "--json").stdout)
    assert file_id in [f["id"] for f in listed["list"]]
    dest = tmp_path / "copy.txt"
    fetched = one_json(cli(cloud.url, ADMIN, "files", "download", file_id, "-o", str(dest), "--json").stdout)
    assert fetched["written_to"] == str(dest) and dest.read_text() == "release notes\n"
    assert one_json(cli(cloud.url, ADMIN, "files", "delete", file_id, "--json").stdout) == {
        "id": file_id,
        "deleted": True,
    }

    agents = one_json(cli(cloud.url, ADMIN, "agents", "list", "--json").stdout)
    assert [(a["id"], a["status"]) for a in agents] == [("local", "online")]
    agent = one_json(cli(cloud.url, ADMIN, "agents", "get", "local", "--json").stdout)
    assert agent["id"] == "local" and "shell" in agent["executors"]
    shown = cli(cloud.url, ADMIN, "agents", "get", "local")
    assert shown.returncode == 0 and "status:" in shown.stdout and "online" in shown.stdout
    table = cli(cloud.url, ADMIN, "agents", "list")
    assert table.stdout.split()[:2] == ["ID", "STATUS"] and "local" in table.stdout
    gone = cli(cloud.url, ADMIN, "agents", "get", "nobody", "--json")
    assert gone.returncode == 5 and "nobody" in one_json(gone.stdout)["error"]

    made = one_json(
        cli(
            cloud.url,
            ADMIN,
            "token",
            "create",
            "--name",
            "json-ci",
            "--can",
            "read",
            "--agents",
            "*",
            "--types",
            "*",
            "--json",
        ).stdout
    )
    assert made["token"].startswith("tgp_")
    tokens = one_json(cli(cloud.url, ADMIN, "token", "list", "--json").stdout)
    assert made["id"] in [t["id"] for t in tokens]
    deleted = cli(cloud.url, ADMIN, "token", "delete", str(made["id"]), "--json")
    assert one_json(deleted.stdout) == {"id": made["id"], "deleted": True}
    audit = one_json(cli(cloud.url, ADMIN, "audit", "list", "--action", "token", "--json").stdout)
    assert {"token.create", "token.delete"} <= {r["action"] for r in audit["list"]}


def test_an_id_is_one_path_segment_never_another_resource(cloud: Cloud) -> None:
    """A careless id (`../agents/local`) must not reach another endpoint: httpx resolves dot segments, so
    unquoted it made `files delete` delete the agent `local`."""
    deleted = cli(cloud.url, ADMIN, "files", "delete", "../agents/local", "--json")
    assert deleted.returncode == 5, deleted.stdout + deleted.stderr
    assert one_json(cli(cloud.url, ADMIN, "agents", "get", "local", "--json").stdout)["id"] == "local"
    dots = cli(cloud.url, ADMIN, "task", "cancel", "..", "--json")
    assert dots.returncode == 2 and "'..' is not an id" in one_json(dots.stdout)["error"]
