"""py-spy a process while a workload runs, and summarise where its CPU went (for bench/versus_celery.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

RATE = 1000  # samples per second: a round trip is a few ms, the default 100 Hz sees too little of one
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


def record_profile(pid: int, out: Path, workload: Callable[[], object], native: bool = False) -> dict[str, Any]:
    """Sample `pid` with py-spy (raw collapsed stacks into `out`) while `workload` runs; return a summary.

    `--nonblocking` reads the process without stopping it, so the sampling barely slows what it measures;
    `native` adds the C frames (the event loop's, the sockets'), which needs the process stopped per sample.
    py-spy is found in $PY_SPY, on PATH, or beside this interpreter (the dev group installs it in .venv).
    """
    # The dev group installs it beside this interpreter (`make bench` runs .venv/bin/python, not on PATH).
    beside = Path(sys.executable).with_name("py-spy")
    exe = os.environ.get("PY_SPY") or shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if not exe:
        return {"error": "py-spy not found: `make install` puts it in .venv (the dev group), or set PY_SPY"}
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw"]
    cmd += ["--native"] if native else ["--nonblocking"]
    spy = subprocess.Popen([*cmd, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)  # py-spy attaches before the workload starts
    t0 = time.perf_counter()
    workload()
    seconds = time.perf_counter() - t0
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    _, err = spy.communicate(timeout=60)
    if not out.exists():
        return {"error": f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"}
    return {"file": str(out), "workload_seconds": round(seconds, 3), **summarise(out.read_text())}


OURS = ("cloud", "wire", "files", "executors", "agent")


def _where(file: str) -> str:
    """The package of a frame's file as py-spy prints it (`fastapi/routing.py`, `contextlib.py`): its top folder."""
    top = Path(file).parts[0] if "/" in file else Path(file).stem
    return f"tiangong {top}" if top in OURS else top


def summarise(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Samples by the package of the innermost frame, the top functions by self samples, and Tiangong's
    own functions by inclusive samples. `--nonblocking` stacks are sometimes cut short at the root, so
    the inclusive shares are lower bounds; the innermost frame is always right."""
    total, by_package, self_frames, ours = 0, Counter[str](), Counter[str](), Counter[str]()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [m for f in stack.split(";") if (m := FRAME.match(f))]
        if not frames:
            continue
        total += count
        names = [f"{m['func']} ({_where(m['file'])})" for m in frames]
        by_package[_where(frames[-1]["file"])] += count
        self_frames[names[-1]] += count
        # Our own functions with what they call: which of Tiangong's steps the CPU is spent under.
        for name in {n for n, m in zip(names, frames, strict=True) if _where(m["file"]).startswith("tiangong")}:
            ours[name] += count

    def share(counter: Counter[str]) -> list[list[object]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self_percent_by_package": share(by_package),
        "self_percent_by_function": share(self_frames),
        "inclusive_percent_by_tiangong_function": share(ours),
    }
