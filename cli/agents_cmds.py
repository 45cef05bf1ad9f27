"""`tiangong agents ...`: the agents a token reaches (list, get); for admins, agent tokens, disable,
enable and delete."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.admin_cmds import parse_duration
from cli.api import DEFAULT_URL, Api, TokenOpt, UrlOpt, delete_record, endpoint
from cli.exitcodes import EPILOG
from cli.output import JsonOpt, emit, fields, note, table

app = typer.Typer(no_args_is_help=True, help="Agents: list, show, issue tokens, disable, delete.", epilog=EPILOG)


def _state(a: dict[str, Any]) -> str:
    return a["status"] + (" (disabled)" if a.get("disabled") else "")


@app.command("list")
def agents_list(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Agents this token reaches, with their state."""
    with Api(url, token) as api:
        agents = api.get("/api/v1/agents")
    rows = [
        (
            a["id"], _state(a), a["hostname"], ",".join(f"{k}={v}" for k, v in a["labels"].items()) or "-",
            a["max_concurrency"], (a["last_seen_at"] or "never")[:19], ",".join(a["executors"]),
        )
        for a in agents
    ]  # fmt: skip
    header = ("ID", "STATUS", "HOST", "LABELS", "SLOTS", "LAST SEEN", "TYPES")
    emit(agents, lambda: table(header, rows))


@app.command("get")
def agents_get(agent_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Show one agent: state, host, labels, task types, last heartbeat."""
    with Api(url, token) as api:
        agent = api.get(endpoint("/api/v1/agents/{}", agent_id))
    emit(agent, lambda: fields(list({**agent, "status": _state(agent)}.items())))


@app.command("status")
def agents_status(agent_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Whether AGENT_ID is there and how busy: online/offline, heartbeat age, pending and running tasks."""
    with Api(url, token) as api:
        status = api.get(endpoint("/api/v1/agents/{}/status", agent_id))
    emit(status, lambda: fields(list(status.items())))


@app.command("token")
def agents_token(
    agent_id: str,
    name: Annotated[str, typer.Option(help="A name for this token.")] = "agent",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d.")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Issue an agent token (tga_) for AGENT_ID, e.g. for a Kubernetes Secret shared by a pool; shown once."""
    body = {"name": name, "expires_in": parse_duration(expires) if expires else None}
    with Api(url, token) as api:
        created = api.post(endpoint("/api/v1/agents/{}/tokens", agent_id), json=body)
    emit(created, lambda: print(created["token"]))
    note(f"agent token for {agent_id}: shown once, store it now")


@app.command("disable")
def agents_disable(agent_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Hand the agent no more tasks (what runs finishes)."""
    _set_disabled(agent_id, True, url, token)


@app.command("enable")
def agents_enable(agent_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Let a disabled agent take tasks again."""
    _set_disabled(agent_id, False, url, token)


def _set_disabled(agent_id: str, disabled: bool, url: str, token: str) -> None:
    with Api(url, token) as api:
        agent = api.request("PATCH", endpoint("/api/v1/agents/{}", agent_id), json={"disabled": disabled})
    emit(agent, lambda: print(f"{agent['id']} {_state(agent)}"))


@app.command("delete")
def agents_delete(agent_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Delete the agent: its tokens stop working, its pending and running tasks fail."""
    delete_record(url, token, endpoint("/api/v1/agents/{}", agent_id), agent_id, f"agent {agent_id} deleted")
