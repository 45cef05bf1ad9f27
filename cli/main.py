"""`tiangong`: run the cloud, an agent, or both (`up`), and talk to a running cloud."""

from __future__ import annotations

import os
import sys
from typing import Any, cast

import typer

from cli import admin_cmds, agents_cmds, files_cmds, fleet_cmds, schedules_cmds, servers, shell_cmd, task_cmds
from cli.exitcodes import EPILOG, CliError, Code
from cli.interrupts import Interrupted
from cli.output import error, json_mode


class _App(typer.Typer):
    """The typer app, run so that every failure a user can fix is one line on stderr (or `{"error"}` with
    --json) and its documented exit code. A bug keeps its traceback (TIANGONG_DEBUG=1 shows one for
    any failure)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().__call__(*args, **kwargs)
        except CliError as exc:
            if os.environ.get("TIANGONG_DEBUG"):
                raise
            error(exc.message, exc.code, **exc.extra)
            sys.exit(exc.code)
        except Interrupted as exc:  # a signal outside the commands that handle it
            sys.exit(exc.code)
        except typer.TyperException as exc:  # usage errors: typer's own message, or {"error"} with --json
            if json_mode(kwargs.get("args")):
                error(exc.format_message(), exc.exit_code)
            else:
                from typer import rich_utils

                rich_utils.rich_format_error(cast(Any, exc))  # a ClickException: typer's own
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(Code.SIGINT)
        # Without standalone mode, typer returns the code of an explicit Exit, or the command's result.
        sys.exit(result if isinstance(result, int) else 0)


app = _App(
    no_args_is_help=True,
    add_completion=False,
    help="Tiangong: deploy-and-execute service. Client commands read TIANGONG_URL and TIANGONG_TOKEN.",
    epilog=EPILOG,
    # Tracebacks of real bugs without local variables: they would print the token.
    pretty_exceptions_show_locals=False,
)
app.command("cloud")(servers.cloud)
app.command("agent")(servers.agent)
app.command("up")(servers.up)
app.command("shell")(shell_cmd.shell)
fleet_cmds.register(task_cmds.app)  # `tiangong task fleet` (docs/fleet.md)
app.add_typer(task_cmds.app, name="task", help="Run tasks and follow them; inspect, cancel, retry.")
app.add_typer(files_cmds.app, name="files", help="Upload, list, download and delete files.")
app.add_typer(agents_cmds.app, name="agents")
app.add_typer(schedules_cmds.app, name="schedules")
app.add_typer(admin_cmds.tokens_app, name="token")
app.add_typer(admin_cmds.audit_app, name="audit")


if __name__ == "__main__":
    app()
