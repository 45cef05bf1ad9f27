"""`tiangong up` watching its children: an agent that dies is reported and started again (the new process
kills what the dead one left running and reports those tasks lost); a cloud that dies stops everything."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import typer

RESTART_DELAY_S = 1.0
"""Wait before the first restart; doubled for each quick death after it."""
MAX_RESTART_DELAY_S = 30.0
"""Longest wait between restarts of an agent that keeps dying (e.g. a disk full)."""
STABLE_AFTER_S = 60.0
"""An agent that ran this long before dying is restarted after the first delay again."""


def describe_exit(code: int) -> str:
    """`-9` -> `killed by SIGKILL`; `2` -> `exit code 2`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Watches `procs` ([agent, cloud], the agent first), restarting the agent with `start_agent`."""

    def __init__(
        self, procs: list[subprocess.Popen[bytes]], agent_id: str, start_agent: Callable[[], subprocess.Popen[bytes]]
    ) -> None:
        self.procs = procs
        self.agent_id = agent_id
        self.start_agent = start_agent
        self.restarts = 0

    def run(self, poll_s: float = 0.2) -> int:
        """Until SIGINT/SIGTERM (0) or the cloud's death (1). The caller stops what still runs."""
        delay = RESTART_DELAY_S
        started = time.monotonic()
        try:
            while True:
                agent, cloud = self.procs
                if cloud.poll() is not None:
                    typer.echo(f"error: the cloud exited ({describe_exit(cloud.returncode)}): stopping", err=True)
                    return 1
                if agent.poll() is not None:
                    if time.monotonic() - started >= STABLE_AFTER_S:
                        delay = RESTART_DELAY_S
                    typer.echo(
                        f"agent {self.agent_id} exited ({describe_exit(agent.returncode)}): "
                        f"starting it again in {delay:.0f} s",
                        err=True,
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, MAX_RESTART_DELAY_S)
                    self.procs[0] = self.start_agent()
                    self.restarts += 1
                    started = time.monotonic()
                    typer.echo(f"agent {self.agent_id} started again (pid {self.procs[0].pid})", err=True)
                time.sleep(poll_s)
        except KeyboardInterrupt:
            return 0
