"""Process groups on this machine: whether one still runs, a process's /proc fields, the kill grace.

Public because the agent uses them too: it allows an executor `MAX_KILL_GRACE_S` past its deadline and
kills the groups a dead agent left behind.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

DEFAULT_KILL_GRACE_S = 5.0
MAX_KILL_GRACE_S = 60.0
"""Upper bound for params.kill_grace_s; the agent allows an executor this much past its deadline."""


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to process group `pgid`, if it still exists."""
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs; zombies left for init to reap do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # a member changed its user (setuid): it exists
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no procfs: only kill(2) can tell, and it counts zombies too
    # init may reap orphans lazily (or never, when the agent is PID 1 itself): look at the states.
    return any(_running_member(entry, pgid) for entry in entries if entry.isdigit())


def proc_stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name, from the state (field 3) on; None when the
    process is gone or there is no procfs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after its last ")".
    return stat[stat.rfind(b")") + 2 :].split()


def _running_member(pid: str, pgid: int) -> bool:
    fields = proc_stat(pid)  # state, ppid, pgrp, ...
    return fields is not None and len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X")


def kill_grace(params: Mapping[str, Any]) -> float:
    """`params.kill_grace_s` in seconds; raises ValueError naming the field."""
    value = params.get("kill_grace_s", DEFAULT_KILL_GRACE_S)
    try:
        grace = float(value)
    except (TypeError, ValueError):
        grace = -1.0
    if isinstance(value, bool) or not math.isfinite(grace) or not 0 <= grace <= MAX_KILL_GRACE_S:
        raise ValueError(f"params.kill_grace_s: must be a number of seconds from 0 to {MAX_KILL_GRACE_S:g}")
    return grace
