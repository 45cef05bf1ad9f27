"""`tiangong up` (what `make run` starts): the printed curl line works when pasted."""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

from tests.e2e.harness import ROOT, free_port


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert proc.stdout is not None
    proc.stdout.close()


def _start_up(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIANGONG_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for ln in stdout:  # ends at EOF
            lines.put(ln)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _read_banner(lines: queue.Queue[str]) -> list[str]:
    """Lines up to the end of the printed curl example."""
    seen: list[str] = []
    while not (seen and seen[-1].strip().startswith("-d '")):
        seen.append(lines.get(timeout=90))
    return seen


def test_up_prints_a_working_curl_and_keeps_its_tokens(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc, lines = _start_up(data_dir, free_port())
    try:
        banner = _read_banner(lines)
        text = "".join(banner)
        assert "generated admin token" in text
        start = next(i for i, ln in enumerate(banner) if ln.strip().startswith("export TOKEN="))
        script = "".join(banner[start:])
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=True)
        task = json.loads(out.stdout)
        assert (task["status"], task["result"], task["exit_code"]) == ("success", "hello\n", 0)
        for name in ("admin.token", "agent.token"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
    finally:
        _stop(proc)

    # Started again on the same data dir: the same token, not printed as generated again.
    proc, lines = _start_up(data_dir, free_port())
    try:
        text = "".join(_read_banner(lines))
        assert "generated" not in text
        assert (data_dir / "admin.token").read_text().strip() in text
    finally:
        _stop(proc)
