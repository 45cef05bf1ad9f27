"""`tiangong task fleet`: one task on every agent a selector matches (a fleet run, docs/fleet.md), followed
to its end with a table of each agent's outcome; and the same table for `tiangong task get` of a run."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.api import DEFAULT_URL, Api, TokenOpt, UrlOpt, endpoint
from cli.exitcodes import EPILOG, CliError, Code, for_status
from cli.interrupts import Interrupted, Interrupts
from cli.output import JsonOpt, emit, note, table
from cli.task_cmds import _interrupted, note_failure
from cli.task_input import EnvOpt, ParamsOpt, read_env, read_params


def selector(ids: list[str] | None, globs: list[str] | None, labels: list[str] | None) -> dict[str, Any]:
    """`agent_selector` from the options: ids and globs (repeatable, or comma-separated), labels k=v."""
    chosen: dict[str, Any] = {}
    for name, values in (("ids", ids), ("globs", globs)):
        items = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
        if items:
            chosen[name] = items
    pairs: dict[str, str] = {}
    for item in labels or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--label: expected KEY=VALUE, got {item!r}", Code.USAGE)
        pairs[key.strip()] = value
    if pairs:
        chosen["labels"] = pairs
    if not chosen:
        raise CliError("give the agents: --id, --glob or --label (--glob '*' for every agent)", Code.USAGE)
    return chosen


def fleet(
    command: Annotated[str, typer.Argument(help="The command line (or script, host...) run on each agent.")] = "",
    ids: Annotated[list[str] | None, typer.Option("--id", help="An agent id; repeatable or a,b,c.")] = None,
    globs: Annotated[list[str] | None, typer.Option("--glob", help="Agent id pattern (web-*); repeatable.")] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE every agent carries; repeatable.")
    ] = None,
    type_: Annotated[str, typer.Option("--type", "-t", help="Task type: shell, python, execute...")] = "shell",
    max_concurrency: Annotated[
        str | None, typer.Option(help='Agents running at once: a count or a percentage ("25%"); default 50.')
    ] = None,
    max_errors: Annotated[
        str | None, typer.Option(help="Errors tolerated before no new agent starts: a count or percentage; default 0.")
    ] = None,
    params: ParamsOpt = None,
    env: EnvOpt = None,
    exec_timeout: Annotated[int | None, typer.Option(help="Seconds each agent's task may run.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the run ends.")] = True,
    detach: Annotated[
        bool, typer.Option("--detach", help="On Ctrl+C or SIGTERM, leave the run going instead of canceling it.")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Run a task on every agent the selector matches, a few at a time; print each agent's outcome and exit
    with the run's code (0 only when every agent succeeded). Ctrl+C cancels the run (exit 130/143)."""
    body: dict[str, Any] = {
        "agent_selector": selector(ids, globs, labels),
        "type": type_,
        "command": command,
        "params": read_params(params) if params is not None else {},
        "env": read_env(env),
    }
    optional = {"max_concurrency": max_concurrency, "max_errors": max_errors, "exec_timeout": exec_timeout}
    body.update({k: v for k, v in optional.items() if v is not None})
    run: dict[str, Any] | None = None
    with Api(url, token) as api, Interrupts() as interrupts:
        try:
            with interrupts.held():
                run = api.post("/api/v1/tasks", json=body)
                info = run["fleet"]
                note(
                    f"{run['id']} created on {info['targets']} agent(s), up to {info['concurrency']} at once; "
                    f"stop it with: tiangong task cancel {run['id']}"
                )
            if not wait:
                emit(run, lambda: print(run["id"]))
                return
            from cli.follow import follow

            follow(api, run["id"], show=False)  # the run's log ends when the run does
            final = api.get(endpoint("/api/v1/tasks/{}", run["id"]))
        except Interrupted as stop:
            raise _interrupted(api, run, stop, detach) from None  # the same cancel (or --detach) as `task run`
    emit(final, lambda: show_run(final))
    note_failure(final["id"], final["status"], final.get("error"))
    raise typer.Exit(for_status(final["status"]))


def show_run(run: dict[str, Any]) -> None:
    """Each target of a run: agent, status, exit code, its task, error; then the counts."""
    info = run.get("fleet") or {}
    rows = [
        (r["agent_id"], r["status"], r.get("exit_code"), r.get("task_id") or "-", (r.get("error") or "")[:80])
        for r in info.get("results") or []
    ]
    counts = info.get("counts") or {}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "errors")
    outcome = f"outcome {info['outcome']}: " if info.get("outcome") else ""
    table(("AGENT", "STATUS", "EXIT", "TASK", "ERROR"), rows, f"{run['id']} {outcome}{summary}")


def register(app: typer.Typer) -> None:
    """Add `fleet` to the `task` group."""
    app.command("fleet", epilog=EPILOG)(fleet)
