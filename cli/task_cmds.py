"""`tiangong task ...`: create a task and follow it to its end, or inspect, follow, cancel and retry tasks."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from cli.api import DEFAULT_URL, Api, TokenOpt, UrlOpt, endpoint
from cli.exitcodes import EPILOG, CliError, Code, for_status, passthrough
from cli.interrupts import Interrupted, Interrupts
from cli.output import JsonOpt, emit, fields, note, page_footer, table
from cli.task_input import EnvOpt, ParamsOpt, read_env, read_params

app = typer.Typer(no_args_is_help=True, epilog=EPILOG)


@app.command("run", epilog=EPILOG)
def run(
    agent_id: Annotated[str, typer.Argument(help="The agent that runs it.")],
    command: Annotated[str, typer.Argument(help="The command line, script, host (ping), method (api)...")] = "",
    type_: Annotated[
        str, typer.Option("--type", "-t", help="Task type: shell, python, execute, ping, mysql...")
    ] = "shell",
    params: ParamsOpt = None,
    env: EnvOpt = None,
    file_id: Annotated[
        str | None, typer.Option(help="An uploaded file (`tiangong files upload`): $TIANGONG_FILE.")
    ] = None,
    exec_timeout: Annotated[int | None, typer.Option(help="Seconds the task may run; then it ends `timeout`.")] = None,
    request_id: Annotated[
        str | None, typer.Option(help="Idempotency key: running again with it returns the same task.")
    ] = None,
    max_retries: Annotated[int, typer.Option(help="Retries after a lost agent (any failure with --retry-on any).")] = 0,
    retry_on: Annotated[str, typer.Option(help="lost or any.")] = "lost",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the log until the task ends.")] = True,
    detach: Annotated[
        bool, typer.Option("--detach", help="On Ctrl+C or SIGTERM, leave the task running instead of canceling it.")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Create a task, print its id at once, follow its log and exit with the code of its outcome.

    Ctrl+C or SIGTERM cancels the task (exit 130/143); with --detach it goes on running."""
    body: dict[str, Any] = {
        "agent_id": agent_id,
        "type": type_,
        "command": command,
        "params": read_params(params) if params is not None else {},
        "env": read_env(env),
        "max_retries": max_retries,
        "retry_on": retry_on,
    }
    optional = {"file_id": file_id, "exec_timeout": exec_timeout, "request_id": request_id}
    body.update({k: v for k, v in optional.items() if v is not None})
    task: dict[str, Any] | None = None
    with Api(url, token) as api, Interrupts() as interrupts:
        try:
            with interrupts.held():
                task = api.post("/api/v1/tasks", json=body)
                note(f"{task['id']} created on {agent_id}; stop it with: tiangong task cancel {task['id']}")
            if not wait:
                emit(task, lambda: print(task["id"]))
                return
            _finish(task["id"], *_follow(api, task["id"]))
        except Interrupted as stop:
            raise _interrupted(api, task, stop, detach) from None


def _follow(api: Api, task_id: str) -> tuple[dict[str, Any], int]:
    from cli.follow import follow

    followed = follow(api, task_id)
    return api.get(endpoint("/api/v1/tasks/{}", task_id)), followed.stdout_lines


def _finish(task_id: str, final: dict[str, Any], stdout_lines: int) -> None:
    """Print the outcome (the result too, for types that log nothing: ping, api, sql...) and exit with its code."""
    status = final["status"]

    def human() -> None:
        if not stdout_lines and final.get("result"):
            sys.stdout.write(final["result"] if final["result"].endswith("\n") else final["result"] + "\n")

    emit(final, human)
    note_failure(task_id, status, final.get("error"))
    raise typer.Exit(for_status(status))


def note_failure(task_id: str, status: object, error: object) -> None:
    """Unless the task (or fleet run) succeeded, one note saying how it ended and why."""
    if status != "success":
        note(f"{task_id} {status}: {error or 'no error given'}")


def _interrupted(api: Api, task: dict[str, Any] | None, stop: Interrupted, detach: bool) -> CliError:
    """Cancel the task we started (or leave it, with --detach); the error to exit with (130 or 143)."""
    name = signal.Signals(stop.signum).name
    if task is None:
        return CliError(f"{name} before the cloud answered: the task may exist (tiangong task list)", stop.code)
    task_id = task["id"]
    if detach:
        return CliError(
            f"{name}: left {task_id} running (--detach); follow it with `tiangong task logs -f {task_id}`",
            stop.code,
            task_id=task_id,
        )
    try:
        api.post(endpoint("/api/v1/tasks/{}/cancel", task_id), timeout=10)
        message = f"{name}: canceled {task_id}"
    except CliError as exc:
        if exc.code == Code.REFUSED:  # 409: it ended meanwhile
            message = f"{name}: {task_id} had already ended ({exc.message})"
        else:
            message = f"{name}: could not cancel {task_id}, it may still be running: {exc.message}"
    return CliError(message, stop.code, task_id=task_id)


@app.command("wait", epilog=EPILOG)
def wait_(task_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Wait until a task ends (without its log) and exit with the code of its outcome."""
    from cli.follow import follow

    with Api(url, token) as api:
        follow(api, task_id, show=False)
        final = api.get(endpoint("/api/v1/tasks/{}", task_id))
    emit(final, lambda: print(f"{final['id']} {final['status']}"))
    raise typer.Exit(for_status(final["status"]))


@app.command("get")
def get(task_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Show a task."""
    with Api(url, token) as api:
        task = api.get(endpoint("/api/v1/tasks/{}", task_id))
    emit(task, lambda: _show_task(task))


def _show_task(t: dict[str, Any]) -> None:
    keys = ("id", "status", "agent_id", "type", "command", "params", "env", "file_id", "exit_code", "error")
    more = ("attempts", "request_id", "exec_timeout", "created_at", "started_at", "finished_at")
    fields([(k, t.get(k)) for k in (*keys, *more, "parent_id")])
    if t.get("result"):
        print("result:\n" + t["result"].rstrip("\n"))
    if t.get("fleet"):  # a fleet run: each agent's outcome (docs/fleet.md)
        from cli.fleet_cmds import show_run

        show_run(t)


@app.command("logs", epilog=EPILOG)
def logs(
    task_id: str,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow until the task ends; exit with its code.")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Print a task's log. With -f, follow it and exit with the task's own exit code (`exit 5` -> 5)."""
    from cli.follow import follow

    with Api(url, token) as api:
        if follow_:
            end = follow(api, task_id).end
            emit({"task_id": task_id, **end}, lambda: None)
            note_failure(task_id, end.get("status"), end.get("error"))
            raise typer.Exit(passthrough(str(end.get("status")), end.get("exit_code")))
        lines = _all_lines(api, task_id)
    emit(lines, lambda: _print_lines(lines))


def _all_lines(api: Api, task_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    path = endpoint("/api/v1/tasks/{}/logs", task_id)
    while True:
        page = api.get(path, params={"after": out[-1]["id"] if out else 0, "limit": 1000})
        out.extend(page)
        if len(page) < 1000:
            return out


def _print_lines(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        (sys.stdout if line["stream"] == "stdout" else sys.stderr).write(line["message"] + "\n")


@app.command("list")
def list_(
    agent_id: Annotated[str | None, typer.Option(help="Only this agent's tasks.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, success, failed, timeout, canceled.")] = None,
    type_: Annotated[str | None, typer.Option("--type", "-t", help="Only this type.")] = None,
    q: Annotated[str | None, typer.Option(help="Part of the command.")] = None,
    parent: Annotated[str | None, typer.Option(help="Only this fleet run's tasks (one per agent).")] = None,
    page: int = 1,
    page_size: Annotated[int, typer.Option(help="Tasks per page, at most 100.")] = 20,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """List tasks, newest first."""
    query = {"agent_id": agent_id, "status": status, "type": type_, "q": q, "page": page, "page_size": page_size}
    query["parent_id"] = parent
    with Api(url, token) as api:
        data = api.get("/api/v1/tasks", params={k: v for k, v in query.items() if v is not None})
    rows = [
        (t["id"], t["status"], t["agent_id"], t["type"], t["exit_code"], t["created_at"][:19], t["command"][:60])
        for t in data["list"]
    ]
    footer = page_footer(data, rows)
    emit(data, lambda: table(("ID", "STATUS", "AGENT", "TYPE", "EXIT", "CREATED", "COMMAND"), rows, footer))


@app.command("cancel")
def cancel(task_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Cancel a pending or running task (a running one is stopped by its agent)."""
    with Api(url, token) as api:
        task = api.post(endpoint("/api/v1/tasks/{}/cancel", task_id))
    emit(
        task,
        lambda: print(
            f"{task['id']} {task['status']}" + (" (its agent stops it)" if task["status"] == "running" else "")
        ),
    )


@app.command("retry")
def retry(task_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Run a finished task again (a new attempt, queued at once)."""
    with Api(url, token) as api:
        task = api.post(endpoint("/api/v1/tasks/{}/retry", task_id))
    emit(task, lambda: print(f"{task['id']} {task['status']} (attempt {task['attempts'] + 1})"))
