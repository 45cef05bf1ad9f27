"""`tiangong token|agents|audit ...`: credentials, agents and the audit log of a running cloud (admin)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from cli.client_cmds import ServerOpt, TokenOpt, check, client, show

tokens_app = typer.Typer(no_args_is_help=True, help="API and registration tokens (admin).")
agents_app = typer.Typer(no_args_is_help=True, help="Agents: list, issue tokens, disable, delete.")
audit_app = typer.Typer(no_args_is_help=True, help="Who did what, and when (admin).")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> int:
    """`90s`, `15m`, `12h`, `30d`, `1w`, `1y` or plain seconds -> seconds; BadParameter otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdwy]?)\s*", text)
    if not m:
        raise typer.BadParameter(f"{text!r}: expected a duration such as 30d, 12h, 15m or 3600")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _split(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _labels(text: str | None) -> dict[str, str]:
    out = {}
    for part in _split(text):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--labels: expected k=v, got {part!r}")
        out[key.strip()] = value.strip()
    return out


@tokens_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who uses it; the audit log shows this name.")],
    agents: Annotated[str | None, typer.Option(help="Agent ids or globs, comma-separated ('web-*', '*').")] = None,
    labels: Annotated[str | None, typer.Option(help="Agents with these labels too: k=v,k2=v2.")] = None,
    types: Annotated[str | None, typer.Option(help="Task types, comma-separated ('*' for all).")] = None,
    can: Annotated[
        str | None,
        typer.Option(help="Actions: create,read,cancel,retry,delete,files:read,files:write,admin."),
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d, 12h.")] = None,
    registration: Annotated[bool, typer.Option(help="A registration token (tgr_) for new agents.")] = False,
    single_use: Annotated[bool, typer.Option(help="Registration token: one agent only.")] = False,
    server: ServerOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
) -> None:
    """Create a token and print it: it is shown this once (the cloud keeps only its hash)."""
    body = {
        "name": name,
        "kind": "registration" if registration else "api",
        "agents": _split(agents),
        "labels": _labels(labels),
        "types": _split(types),
        "can": _split(can),
        "single_use": single_use,
        "expires_in": parse_duration(expires) if expires else None,
    }
    with client(server, token) as http:
        created = check(http.post("/api/v1/tokens", json=body))
    typer.echo(created["token"])
    typer.echo(f"token-{created['id']} {created['kind']} {created['name']!r}: shown once, store it now", err=True)


@tokens_app.command("list")
def token_list(server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Every token (without its secret): kind, name, scope, expiry, last use."""
    with client(server, token) as http:
        rows = check(http.get("/api/v1/tokens"))
    for t in rows:
        scope = t["scope"]
        reach = t["agent_id"] or ",".join(scope["agents"] + [f"{k}={v}" for k, v in scope["labels"].items()])
        state = "expired" if t["expired"] else (t["expires_at"] or "no expiry")
        typer.echo(
            f"{t['id']:>5} {t['kind']:<12} {t['hint']}… {t['name']!r:<20} agents={reach or '-'} "
            f"types={','.join(scope['types']) or '-'} can={','.join(scope['can']) or '-'} {state} "
            f"last used {t['last_used_at'] or 'never'}"
        )


@tokens_app.command("delete")
def token_delete(token_id: int, server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Revoke a token by its id (from `tiangong token list`)."""
    with client(server, token) as http:
        check(http.delete(f"/api/v1/tokens/{token_id}"))
    typer.echo(f"token-{token_id} deleted")


@agents_app.command("list")
def agents_list(server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Agents this token reaches, with status."""
    with client(server, token) as http:
        rows = check(http.get("/api/v1/agents"))
    for a in rows:
        flag = " (disabled)" if a.get("disabled") else ""
        typer.echo(f"{a['id']:<24} {a['status']:<8}{flag} {a['hostname']:<20} {','.join(a['executors'])}")


@agents_app.command("token")
def agents_token(
    agent_id: str,
    name: Annotated[str, typer.Option(help="A name for this token.")] = "agent",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d.")] = None,
    server: ServerOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
) -> None:
    """Issue an agent token (tga_) for AGENT_ID, e.g. for a Kubernetes Secret shared by a pool; shown once."""
    body = {"name": name, "expires_in": parse_duration(expires) if expires else None}
    with client(server, token) as http:
        created = check(http.post(f"/api/v1/agents/{agent_id}/tokens", json=body))
    typer.echo(created["token"])


@agents_app.command("disable")
def agents_disable(agent_id: str, server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Hand the agent no more tasks (what runs finishes)."""
    _set_disabled(agent_id, True, server, token)


@agents_app.command("enable")
def agents_enable(agent_id: str, server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Let a disabled agent take tasks again."""
    _set_disabled(agent_id, False, server, token)


def _set_disabled(agent_id: str, disabled: bool, server: str, token: str) -> None:
    with client(server, token) as http:
        show(check(http.patch(f"/api/v1/agents/{agent_id}", json={"disabled": disabled})))


@agents_app.command("delete")
def agents_delete(agent_id: str, server: ServerOpt = "http://127.0.0.1:8080", token: TokenOpt = "") -> None:
    """Delete the agent: its tokens stop working, its pending and running tasks fail."""
    with client(server, token) as http:
        check(http.delete(f"/api/v1/agents/{agent_id}"))
    typer.echo(f"agent {agent_id} deleted")


@audit_app.command("list")
def audit_list(
    actor: Annotated[str | None, typer.Option(help="A token's name.")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. task.create, or task.")] = None,
    page: int = 1,
    server: ServerOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
) -> None:
    """Audit records, newest first."""
    query = {k: v for k, v in {"actor": actor, "action": action, "page": page}.items() if v is not None}
    with client(server, token) as http:
        data = check(http.get("/api/v1/audit", params=query))
    for r in data["list"]:
        typer.echo(f"{r['at']}  {r['actor']:<20} {r['action']:<14} {r['target']:<20} {r['detail']}")
    typer.echo(f"page {data['page']}, {len(data['list'])} of {data['total']}")
