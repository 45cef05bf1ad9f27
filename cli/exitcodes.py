"""The exit codes of `tiangong`: one per outcome a CI job may act on (listed in docs/cli.md and --help)."""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    """Why the command ended. Task outcomes (10-12) are apart from the CLI's own failures (2-6), so a
    pipeline can tell "the deploy failed" from "the cloud was down" (worth a retry)."""

    OK = 0
    BUG = 1
    """An unexpected error: a bug in tiangong, shown with its traceback."""
    USAGE = 2
    """A bad option or argument (typer's own code), an invalid URL, an unreadable --params file."""
    UNREACHABLE = 3
    """The cloud could not be reached (refused, no such host, timed out, 502/503/504 from a proxy)."""
    AUTH = 4
    """No token, or the cloud refused it (401) or refused the action (403)."""
    NOT_FOUND = 5
    """No such task, file or agent (404)."""
    REFUSED = 6
    """The cloud refused the request otherwise (400 bad input, 409 conflict, 413 too large, 5xx), or a
    downloaded file did not match its MD5."""
    TASK_FAILED = 10
    TASK_TIMEOUT = 11
    TASK_CANCELED = 12
    SIGINT = 130
    SIGTERM = 143


EPILOG = (
    "Exit codes: 0 success; 2 usage error; 3 cannot reach the cloud; 4 no token or auth refused (401/403); "
    "5 not found; 6 other refusal (400/409/413/5xx); 10 task failed; 11 task timed out; 12 task canceled; "
    "130/143 interrupted by SIGINT/SIGTERM (the task is canceled unless --detach). "
    "`task logs -f` exits with the task's own exit code. See docs/cli.md."
)

_BY_STATUS = {
    "success": Code.OK,
    "failed": Code.TASK_FAILED,
    "timeout": Code.TASK_TIMEOUT,
    "canceled": Code.TASK_CANCELED,
}


def for_status(status: str) -> Code:
    """The exit code for a task that ended with `status`."""
    return _BY_STATUS.get(status, Code.TASK_FAILED)


def passthrough(status: str, exit_code: int | None) -> int:
    """The task's own exit code when it failed with one (`exit 5` -> 5), else the code for its status."""
    if status == "failed" and exit_code is not None and 0 < exit_code < 256:
        return exit_code
    return int(for_status(status))


class CliError(Exception):
    """A failure the user can act on: printed as one line (or `{"error": ...}` with --json), no traceback."""

    def __init__(self, message: str, code: Code, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra
