"""What a task, or another user of the machine, can see of the cloud and agent it runs beside (issue 14,
item 5): no token in any process's environment or command line, a data dir only its owner can read, and
task files only from the agent's private cache, checked against their MD5 on every use."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import secrets
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography.fernet import Fernet

from tests.e2e.harness import ADMIN, AGENT, ROOT, AgentProc, Cloud, free_port, wait_for
from tests.e2e.test_files import curl_upload

CLOUD_PROCESS = True  # the tests look into the cloud process's environment

SECRET_VARS = {"TIANGONG_ADMIN_TOKEN", "TIANGONG_AGENT_TOKEN", "TIANGONG_SECRET_KEY", "TIANGONG_DATABASE_URL"}
NOBODY = 65534

# A task that looks for the given secrets (by SHA-256, so the task carries none) in the environment and
# command line of every process it can read, and lists its ancestors with their variables' names.
PROBE = r"""
import hashlib, json, os
wanted = set(json.loads(os.environ["WANTED"]))

def read(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as fh:
            return [x for x in fh.read().split(b"\0") if x]
    except OSError:
        return []

def digests(items):
    out = set()
    for item in items:
        for part in (item, item.partition(b"=")[2], item.rpartition(b" ")[2]):
            out.add(hashlib.sha256(part).hexdigest())
    return out

found = []
for name in os.listdir("/proc"):
    if name.isdigit():
        for what in ("environ", "cmdline"):
            hits = digests(read(name, what)) & wanted
            if hits:
                found.append({"pid": int(name), "in": what, "hits": sorted(hits)})
ancestors, pid = [], os.getppid()
while pid > 1:
    env = read(pid, "environ")
    ancestors.append({
        "pid": pid,
        "cmdline": [a.decode(errors="replace") for a in read(pid, "cmdline")],
        "env_names": [e.partition(b"=")[0].decode(errors="replace") for e in env],
    })
    status = open(f"/proc/{pid}/status").read()
    pid = int(status.split("PPid:")[1].split()[0])
print(json.dumps({"me": os.getpid(), "found": found, "ancestors": ancestors}))
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def probe(http: httpx.Client, agent_id: str, *values: str) -> dict[str, Any]:
    """Run PROBE as a task on `agent_id`; what it found of `values`."""
    r = http.post(
        "/api/v1/tasks",
        json={
            "agent_id": agent_id,
            "type": "python",
            "command": PROBE,
            "env": {"WANTED": json.dumps([sha(v) for v in values])},
            "sync": True,
            "timeout": 60,
        },
    )
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "success", task
    report: dict[str, Any] = json.loads(task["result"])
    # Our own command line and the test's are not the processes under test.
    report["found"] = [f for f in report["found"] if f["pid"] not in (report["me"], os.getpid())]
    return report


def assert_no_secret_variable(report: dict[str, Any], *commands: str) -> None:
    """The task's ancestors are the agent, then each of `commands` (e.g. `up`): none has a secret variable."""
    ancestors = report["ancestors"][: 1 + len(commands)]
    assert [a["cmdline"][3] for a in ancestors] == ["agent", *commands], ancestors  # python -m cli.main <command>
    for proc in ancestors:
        assert not SECRET_VARS & set(proc["env_names"]), proc


# --- `tiangong up` ---------------------------------------------------------------------------------------


class Up:
    """A `tiangong up` process, its stdout lines and its stderr (the children's logs) in a file."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.port = data_dir, free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("TIANGONG_")}
        self.stderr_path = data_dir.parent / f"up-{self.port}.err"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "up", "--port", str(self.port), "--data-dir", str(data_dir)],
                cwd=ROOT,
                env={**base, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                umask=0o022,  # the usual one: what we create must be private whatever it is
            )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=self._read, args=(stdout,), daemon=True).start()
        seen: list[str] = []
        while not (seen and seen[-1].strip().startswith("-d '")):
            seen.append(self.lines.get(timeout=90))
        self.banner = "".join(seen)
        self.admin = next(ln.split(":", 1)[1].strip() for ln in seen if ln.startswith("Admin token:"))
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {self.admin}"}, timeout=90
        )

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:  # until EOF
            self.lines.put(line)

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    @property
    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_up_tasks_find_no_token_in_any_process(tmp_path: Path) -> None:
    up = Up(tmp_path / "data")
    try:
        agent_token = (tmp_path / "data" / "agent.token").read_text().strip()
        report = probe(up.http, "local", up.admin, agent_token)
        assert report["found"] == []
        assert_no_secret_variable(report, "up")
    finally:
        up.stop()


def test_up_given_secrets_in_its_environment_keeps_none_there(tmp_path: Path) -> None:
    given = {
        "TIANGONG_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "TIANGONG_AGENT_TOKEN": secrets.token_urlsafe(24),
        "TIANGONG_SECRET_KEY": Fernet.generate_key().decode(),
    }
    up = Up(tmp_path / "data", given)
    try:
        assert up.admin == given["TIANGONG_ADMIN_TOKEN"]
        report = probe(up.http, "local", *given.values())
        assert report["found"] == []
        assert_no_secret_variable(report, "up")
        # The cloud got them all, through a pipe: no token or key was generated into the data dir.
        assert not {"admin.token", "agent.token", "secret.key"} & {p.name for p in (tmp_path / "data").iterdir()}
    finally:
        up.stop()


def test_up_data_is_private_and_loose_modes_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = Up(data)
    try:
        script = tmp_path / "deploy.sh"
        script.write_text("echo deployed\n")
        r = up.http.post("/api/v1/files", files={"file": ("deploy.sh", script.read_bytes())})
        assert r.status_code == 201, r.text
        rec = r.json()
        body = {"agent_id": "local", "type": "shell", "command": 'bash "$TIANGONG_FILE"', "file_id": rec["id"]}
        task = up.http.post("/api/v1/tasks", json={**body, "sync": True}).json()
        assert task["result"] == "deployed\n", task
        blob = Path(rec["path"])
        cached = data / "agent" / "cache" / "files" / rec["md5"] / rec["name"]
        private_files = [data / n for n in ("tiangong.db", "tiangong.db-wal", "tiangong.db-shm")]
        private_files += [data / "admin.token", data / "agent.token", data / "secret.key", blob, cached]
        private_dirs = [data, data / "files", blob.parent, data / "files" / "tmp", data / "agent"]
        private_dirs += [data / "agent" / "outbox", cached.parent, cached.parent.parent]
        assert {str(p): mode(p) for p in private_files} == {str(p): 0o600 for p in private_files}
        assert {str(p): mode(p) for p in private_dirs} == {str(p): 0o700 for p in private_dirs}
    finally:
        up.stop()

    # As an older version left them: everything readable by all. The next start tightens, and says so.
    loose = [p for p in [data, *data.rglob("*")] if not p.is_symlink()]
    for p in loose:
        p.chmod(0o755 if p.is_dir() else 0o644)
    up = Up(data)
    try:
        # A task run by the new agent process: it has started (and prepared its data dir) by then.
        task = up.http.post(
            "/api/v1/tasks", json={"agent_id": "local", "type": "shell", "command": "echo hi"} | {"sync": True}
        )
        assert task.json()["result"] == "hi\n", (task.json(), up.log[-3000:])
        assert "tightened" in up.log
        assert {str(p): mode(p) for p in private_files} == {str(p): 0o600 for p in private_files}
        assert {str(p): mode(p) for p in private_dirs} == {str(p): 0o700 for p in private_dirs}
    finally:
        up.stop()


# --- a plain agent ---------------------------------------------------------------------------------------


def test_agent_and_cloud_given_tokens_in_env_or_argv_show_them_to_no_task(cloud: Cloud, tmp_path: Path) -> None:
    # The harness gives its agents both tokens in the environment.
    report = probe(cloud.http, "local", AGENT, ADMIN)
    agent_pid = report["ancestors"][0]["pid"]
    assert cloud.proc is not None  # given both tokens in its environment as well
    assert [f for f in report["found"] if f["pid"] in (agent_pid, cloud.proc.pid)] == []
    assert_no_secret_variable(report)

    # --token on the command line: `ps` would show it to every user of the machine.
    env = {k: v for k, v in cloud.env.items() if not k.startswith("TIANGONG_")}
    cmd = [sys.executable, "-m", "cli.main", "agent", "--server", cloud.url, "--agent-id", "argv"]
    cmd += ["--token", AGENT, "--data-dir", str(tmp_path / "argv-agent")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    cloud.agents.append(AgentProc(proc, "argv", tmp_path / "argv-agent"))
    wait_for(lambda: cloud.http.get("/api/v1/agents/argv").json().get("status") == "online", 30, "agent argv")
    report = probe(cloud.http, "argv", AGENT)
    assert report["ancestors"][0]["pid"] == proc.pid
    assert [f for f in report["found"] if f["pid"] == proc.pid] == []
    assert AGENT not in " ".join(report["ancestors"][0]["cmdline"])


def test_agent_token_file(cloud: Cloud, tmp_path: Path) -> None:
    token_file = tmp_path / "agent.token"
    token_file.write_text(AGENT + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in cloud.env.items() if not k.startswith("TIANGONG_")}
    env["TIANGONG_AGENT_TOKEN_FILE"] = str(token_file)
    cmd = [sys.executable, "-m", "cli.main", "agent", "--server", cloud.url, "--agent-id", "from-file"]
    proc = subprocess.Popen([*cmd, "--data-dir", str(tmp_path / "a")], cwd=ROOT, env=env)
    cloud.agents.append(AgentProc(proc, "from-file", tmp_path / "a"))
    wait_for(lambda: cloud.http.get("/api/v1/agents/from-file").json().get("status") == "online", 30, "agent")
    task = cloud.run(agent_id="from-file", type="shell", command="echo ok")
    assert task["result"] == "ok\n"

    # A token and a token file at once: refused at start, naming both.
    both = subprocess.run(
        [*cmd, "--token", AGENT, "--data-dir", str(tmp_path / "b")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert both.returncode != 0 and "--token-file" in both.stderr and "not both" in both.stderr


# --- the agent's file cache ------------------------------------------------------------------------------

SHARED_DIRS = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")]


def _agent_dir(cloud: Cloud) -> Path:
    return next(a.data_dir for a in cloud.agents if a.agent_id == "local")


def _script(path: Path) -> str:
    """Write a script printing a word of its own to `path`; returns what it prints."""
    said = f"{path.stem} {secrets.token_hex(4)}"
    path.write_text(f"echo {said}\n")
    return said + "\n"


def test_a_file_planted_in_a_shared_dir_never_runs(cloud: Cloud, tmp_path: Path) -> None:
    script = tmp_path / "deploy.sh"
    said = _script(script)
    _, rec = curl_upload(cloud, script)
    planted = [d / rec["id"] for d in SHARED_DIRS if d.is_dir()]
    planted.append(_agent_dir(cloud) / "work" / "tmp" / rec["id"])  # where every task of the agent may write
    try:
        for path in planted:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("echo planted\n")
            path.chmod(0o777)
            if os.geteuid() == 0:
                os.chown(path, NOBODY, NOBODY)  # as the issue found it: planted by `nobody`, run as root
        task = cloud.run(type="shell", command='bash "$TIANGONG_FILE"; echo "$TIANGONG_FILE"', file_id=rec["id"])
        result, used = task["result"].splitlines(keepends=True)
        assert result == said, task
        assert Path(used.strip()).is_relative_to(_agent_dir(cloud) / "cache")
    finally:
        for path in planted:
            path.unlink(missing_ok=True)


def test_a_cached_file_changed_after_download_is_fetched_again(cloud: Cloud, tmp_path: Path) -> None:
    script = tmp_path / "migrate.sh"
    said = _script(script)
    _, rec = curl_upload(cloud, script)
    first = cloud.run(type="shell", command='bash "$TIANGONG_FILE"', file_id=rec["id"])
    assert first["result"] == said
    cached = _agent_dir(cloud) / "cache" / "files" / rec["md5"] / "migrate.sh"
    assert cached.read_text() == script.read_text()

    cached.write_text("echo tampered\n")
    again = cloud.run(type="shell", command='bash "$TIANGONG_FILE"', file_id=rec["id"])
    assert again["result"] == said, again
    assert cached.read_text() == script.read_text() and mode(cached) == 0o600

    # A symlink to a file of someone else's choosing is no better.
    evil = tmp_path / "evil.sh"
    evil.write_text("echo tampered\n")
    cached.unlink()
    cached.symlink_to(evil)
    third = cloud.run(type="shell", command='bash "$TIANGONG_FILE"', file_id=rec["id"])
    assert third["result"] == said, third
    assert not cached.is_symlink()


def test_params_file_path_is_checked_against_the_md5(cloud: Cloud, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    said = _script(script)
    _, rec = curl_upload(cloud, script)
    same = tmp_path / "local-copy.sh"
    same.write_text(script.read_text())
    ok = cloud.run(
        type="shell",
        command='bash "$TIANGONG_FILE"; echo "$TIANGONG_FILE"',
        file_id=rec["id"],
        params={"file_path": str(same)},
    )
    result, used = ok["result"].splitlines(keepends=True)
    assert result == said, ok
    assert Path(used.strip()).is_relative_to(_agent_dir(cloud) / "cache")  # a private copy, not the path given

    other = tmp_path / "other.sh"
    other.write_text("echo not the uploaded file\n")
    bad = cloud.run(type="shell", command='bash "$TIANGONG_FILE"', file_id=rec["id"], params={"file_path": str(other)})
    assert bad["status"] == "failed" and bad["result"] in ("", None), bad
    assert "params.file_path" in bad["error"] and rec["id"] in bad["error"] and "MD5" in bad["error"]
