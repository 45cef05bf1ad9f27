"""`tiangong task ...`: a small client for a running cloud (TIANGONG_SERVER, and TIANGONG_TOKEN: an API
token, or TIANGONG_ADMIN_TOKEN)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True)

ServerOpt = Annotated[str, typer.Option(envvar="TIANGONG_SERVER", help="Cloud URL.")]
TokenOpt = Annotated[
    str,
    typer.Option(envvar=["TIANGONG_TOKEN", "TIANGONG_ADMIN_TOKEN"], help="An API token (tgp_...) or the admin token."),
]


def client(server: str, token: str) -> Any:
    import httpx

    return httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=330)


def check(resp: Any) -> Any:
    if resp.status_code >= 400:
        try:
            msg = resp.json().get("error", resp.text)
        except ValueError:
            msg = resp.text
        typer.echo(f"error: HTTP {resp.status_code}: {msg}", err=True)
        raise typer.Exit(1)
    return resp.json() if resp.content else None


def show(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


@app.command("run")
def run(
    agent_id: Annotated[str, typer.Argument(help="Agent to run on.")],
    command: Annotated[str, typer.Argument(help="The command (or script, for python).")],
    type: Annotated[str, typer.Option("--type", "-t", help="Task type.")] = "shell",
    params: Annotated[str, typer.Option(help="JSON object of params.")] = "{}",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the log until the task ends.")] = True,
    max_retries: Annotated[
        int, typer.Option(help="Retries after a lost agent (or any failure with --retry-on any).")
    ] = 0,
    retry_on: Annotated[str, typer.Option(help="lost or any.")] = "lost",
    server: ServerOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
) -> None:
    """Create a task; by default follow its log and exit with its exit code."""
    try:
        parsed = json.loads(params)
    except ValueError as exc:
        raise typer.BadParameter(f"--params is not JSON: {exc}") from exc
    with client(server, token) as http:
        task = check(
            http.post(
                "/api/v1/tasks",
                json={
                    "agent_id": agent_id,
                    "type": type,
                    "command": command,
                    "params": parsed,
                    "max_retries": max_retries,
                    "retry_on": retry_on,
                },
            )
        )
        if not wait:
            show(task)
            return
        status = _follow(http, task["id"])
        final = check(http.get(f"/api/v1/tasks/{task['id']}"))
    if status != "success":
        typer.echo(f"{final['id']}: {status}: {final['error']}", err=True)
    raise typer.Exit(0 if status == "success" else (final.get("exit_code") or 1))


def _follow(http: Any, task_id: str) -> str:
    """Print log lines as they arrive (stderr lines to stderr); return the final status."""
    with http.stream("GET", f"/api/v1/tasks/{task_id}/logs", params={"follow": "true"}) as resp:
        if resp.status_code >= 400:
            resp.read()
            check(resp)
        event = ""
        for raw in resp.iter_lines():
            if raw.startswith("event: "):
                event = raw[7:]
            elif raw.startswith("data: "):
                data = json.loads(raw[6:])
                if event == "end":
                    return str(data["status"])
                out = sys.stderr if data["stream"] == "stderr" else sys.stdout
                print(data["message"], file=out, flush=True)
    return "unknown"


@app.command("get")
def get(task_id: str, server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Show a task."""
    with client(server, token) as http:
        show(check(http.get(f"/api/v1/tasks/{task_id}")))


@app.command("logs")
def logs(
    task_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    server: ServerOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
) -> None:
    """Print a task's log; -f follows it until the task ends."""
    with client(server, token) as http:
        if follow:
            _follow(http, task_id)
            return
        after = 0
        while True:
            page = check(http.get(f"/api/v1/tasks/{task_id}/logs", params={"after": after, "limit": 1000}))
            for line in page:
                typer.echo(line["message"])
            if len(page) < 1000:
                return
            after = page[-1]["id"]


@app.command("cancel")
def cancel(task_id: str, server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Cancel a pending or running task."""
    with client(server, token) as http:
        show(check(http.post(f"/api/v1/tasks/{task_id}/cancel")))


@app.command("retry")
def retry(task_id: str, server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Run a finished task again (a new attempt, queued at once)."""
    with client(server, token) as http:
        show(check(http.post(f"/api/v1/tasks/{task_id}/retry")))


@app.command("list")
def list_(
    agent_id: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    page: int = 1,
    server: ServerOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
) -> None:
    """List tasks, newest first."""
    query = {k: v for k, v in {"agent_id": agent_id, "status": status, "page": page}.items() if v is not None}
    with client(server, token) as http:
        data = check(http.get("/api/v1/tasks", params=query))
    for t in data["list"]:
        typer.echo(f"{t['id']:>12}  {t['status']:<9} {t['agent_id']:<12} {t['type']:<8} {t['command'][:60]!r}")
    typer.echo(f"page {data['page']}, {len(data['list'])} of {data['total']}")
