"""Following a task's log as it is written (the cloud's SSE stream), through short losses of the cloud."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from cli.api import Api, endpoint
from cli.exitcodes import CliError, Code
from cli.output import note

RECONNECT_SECONDS = 60.0
"""How long a follow keeps trying to reach a cloud that went away (a restart) before giving up."""


@dataclass
class Followed:
    """How the task ended (the stream's `end` event) and what was printed on the way."""

    end: dict[str, Any] = field(default_factory=dict)
    stdout_lines: int = 0


def follow(api: Api, task_id: str, *, show: bool = True, reconnect_s: float = RECONNECT_SECONDS) -> Followed:
    """Print the task's log lines until it ends (stdout lines to stdout, the rest to stderr; all to stderr
    with --json, whose stdout is the one JSON document). Resumes after the last line seen on a reconnect."""
    import httpx

    from cli.output import json_mode

    done = Followed()
    last_id = ""
    gave_up_at: float | None = None
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with api.stream(
                "GET",
                endpoint("/api/v1/tasks/{}/logs", task_id),
                params={"follow": "true"},
                headers=headers,
                timeout=httpx.Timeout(60, connect=10),  # the cloud sends a keepalive every 15 s
            ) as resp:
                gave_up_at = None
                event = ""
                for raw in resp.iter_lines():
                    if raw.startswith("id: "):
                        last_id = raw[4:]
                    elif raw.startswith("event: "):
                        event = raw[7:]
                    elif raw.startswith("data: "):
                        data = json.loads(raw[6:])
                        if event == "end":
                            done.end = data
                            return done
                        if show:
                            _print_line(data, done, json_mode())
        except CliError as exc:
            if exc.code != Code.UNREACHABLE:
                raise
            if gave_up_at is None:
                gave_up_at = time.monotonic() + reconnect_s
                note(f"{exc.message}; trying again for {reconnect_s:.0f} s")
            if time.monotonic() > gave_up_at:
                raise
            time.sleep(1)
        else:
            # The stream ended without `end` (the cloud restarted): follow again from the last line seen.
            time.sleep(0.5)


def _print_line(data: dict[str, Any], done: Followed, to_stderr: bool) -> None:
    out: TextIO = sys.stdout
    if data.get("stream") != "stdout" or to_stderr:
        out = sys.stderr
    else:
        done.stdout_lines += 1
    out.write(str(data.get("message", "")) + "\n")
    out.flush()
