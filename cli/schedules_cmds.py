"""`tiangong schedules ...`: tasks created on a cron (docs/schedules.md): create, list, get, enable, disable,
delete."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.api import DEFAULT_URL, Api, TokenOpt, UrlOpt, delete_record, endpoint
from cli.exitcodes import EPILOG
from cli.output import JsonOpt, emit, fields, note, table
from cli.task_input import EnvOpt, ParamsOpt, read_env, read_params

app = typer.Typer(no_args_is_help=True, help="Schedules: tasks created on a cron.", epilog=EPILOG)


@app.command("create")
def schedules_create(
    name: Annotated[str, typer.Argument(help="A unique name; the tasks it creates carry it as cron_source.")],
    agent_id: Annotated[str, typer.Argument(help="The agent that runs each firing's task.")],
    command: Annotated[str, typer.Argument(help="What each task runs (its meaning depends on --type).")] = "",
    cron: Annotated[str, typer.Option(help="5 fields, 6 with seconds last, @hourly..., or @once.")] = "@once",
    timezone: Annotated[str, typer.Option(help="IANA time zone the cron is read in.")] = "UTC",
    type_: Annotated[str, typer.Option("--type", "-t", help="Task type.")] = "shell",
    params: ParamsOpt = None,
    env: EnvOpt = None,
    exec_timeout: Annotated[int | None, typer.Option(help="Seconds each task may run.")] = None,
    missed: Annotated[str, typer.Option(help="A firing missed while the cloud was down: run_once or skip.")] = (
        "run_once"
    ),
    start_at: Annotated[str | None, typer.Option(help="ISO 8601: no firing before (@once fires then).")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Save it disabled.")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Save a schedule; each firing creates a task on AGENT_ID."""
    task: dict[str, Any] = {"agent_id": agent_id, "type": type_, "command": command}
    if params is not None:
        task["params"] = read_params(params)
    if env:
        task["env"] = read_env(env)
    if exec_timeout is not None:
        task["exec_timeout"] = exec_timeout
    body: dict[str, Any] = {
        "name": name,
        "cron": cron,
        "timezone": timezone,
        "task": task,
        "missed": missed,
        "enabled": not disabled,
    }
    if start_at is not None:
        body["start_at"] = start_at
    with Api(url, token) as api:
        created = api.post("/api/v1/schedules", json=body)
    emit(created, lambda: _show(created))
    note(f"{created['id']} next runs at {created['next_run_at'] or 'never (disabled)'}")


@app.command("list")
def schedules_list(
    agent_id: Annotated[str | None, typer.Option("--agent", help="Only this agent's.")] = None,
    name: Annotated[str | None, typer.Option(help="Names containing this.")] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="Only enabled / disabled.")] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=100)] = 20,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Schedules, with their next and last runs."""
    query: dict[str, Any] = {"page": page, "page_size": page_size}
    for key, value in (("agent_id", agent_id), ("name", name), ("enabled", enabled)):
        if value is not None:
            query[key] = str(value).lower() if isinstance(value, bool) else value
    with Api(url, token) as api:
        found = api.get("/api/v1/schedules", params=query)
    rows = [
        (
            s["id"], s["name"], s["cron"], s["agent_id"], "yes" if s["enabled"] else "no",
            (s["next_run_at"] or "-")[:19], (s["last_run_at"] or "-")[:19], s["runs"], s["last_error"][:40] or "-",
        )
        for s in found["list"]
    ]  # fmt: skip
    header = ("ID", "NAME", "CRON", "AGENT", "ENABLED", "NEXT RUN", "LAST RUN", "RUNS", "LAST ERROR")
    emit(found, lambda: table(header, rows, footer=f"{found['total']} schedule(s)"))


@app.command("get")
def schedules_get(schedule_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """One schedule (secrets in its task masked)."""
    with Api(url, token) as api:
        found = api.get(endpoint("/api/v1/schedules/{}", schedule_id))
    emit(found, lambda: _show(found))


def _set_enabled(schedule_id: str, enabled: bool, url: str, token: str) -> None:
    with Api(url, token) as api:
        changed = api.request("PATCH", endpoint("/api/v1/schedules/{}", schedule_id), json={"enabled": enabled})
    emit(changed, lambda: _show(changed))


@app.command("enable")
def schedules_enable(schedule_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Enable a schedule (its next run is computed from now)."""
    _set_enabled(schedule_id, True, url, token)


@app.command("disable")
def schedules_disable(
    schedule_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False
) -> None:
    """Disable a schedule: it fires no more until enabled."""
    _set_enabled(schedule_id, False, url, token)


@app.command("delete")
def schedules_delete(schedule_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Delete a schedule; the tasks it created stay."""
    delete_record(url, token, endpoint("/api/v1/schedules/{}", schedule_id), schedule_id, f"deleted {schedule_id}")


def _show(s: dict[str, Any]) -> None:
    keys = ("id", "name", "cron", "timezone", "missed", "enabled", "agent_id", "type", "next_run_at", "last_run_at")
    fields([(k, s.get(k)) for k in (*keys, "last_task_id", "runs", "last_error", "created_by")])
