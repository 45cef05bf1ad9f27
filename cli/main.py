"""`tiangong`: run the cloud, an agent, or both (`up`), and talk to a running cloud."""

from __future__ import annotations

import typer

from cli import admin_cmds, client_cmds, servers

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Tiangong: deploy-and-execute service.")
app.command("cloud")(servers.cloud)
app.command("agent")(servers.agent)
app.command("up")(servers.up)
app.add_typer(client_cmds.app, name="task", help="Create, inspect, follow and cancel tasks.")
app.add_typer(admin_cmds.tokens_app, name="token")
app.add_typer(admin_cmds.agents_app, name="agents")
app.add_typer(admin_cmds.audit_app, name="audit")


if __name__ == "__main__":
    app()
