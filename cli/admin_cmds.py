"""`tiangong token|audit ...`: credentials and the audit log of a running cloud (admin)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from cli.api import DEFAULT_URL, Api, TokenOpt, UrlOpt, delete_record, endpoint
from cli.exitcodes import EPILOG
from cli.output import JsonOpt, emit, note, page_footer, table

tokens_app = typer.Typer(no_args_is_help=True, help="API and registration tokens (admin).", epilog=EPILOG)
audit_app = typer.Typer(no_args_is_help=True, help="Who did what, and when (admin).", epilog=EPILOG)

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
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
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
    with Api(url, token) as api:
        created = api.post("/api/v1/tokens", json=body)
    emit(created, lambda: print(created["token"]))
    note(f"token-{created['id']} {created['kind']} {created['name']!r}: shown once, store it now")


@tokens_app.command("list")
def token_list(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Every token (without its secret): kind, name, scope, expiry, last use."""
    with Api(url, token) as api:
        tokens = api.get("/api/v1/tokens")
    rows = []
    for t in tokens:
        scope = t["scope"]
        reach = t["agent_id"] or ",".join(scope["agents"] + [f"{k}={v}" for k, v in scope["labels"].items()])
        state = "expired" if t["expired"] else (t["expires_at"] or "no expiry")
        rows.append(
            (
                t["id"], t["kind"], f"{t['hint']}…", t["name"], reach or "-", ",".join(scope["types"]) or "-",
                ",".join(scope["can"]) or "-", state, t["last_used_at"] or "never",
            )
        )  # fmt: skip
    header = ("ID", "KIND", "HINT", "NAME", "AGENTS", "TYPES", "CAN", "EXPIRES", "LAST USED")
    emit(tokens, lambda: table(header, rows))


@tokens_app.command("delete")
def token_delete(token_id: int, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Revoke a token by its id (from `tiangong token list`)."""
    delete_record(url, token, endpoint("/api/v1/tokens/{}", token_id), token_id, f"token-{token_id} deleted")


@audit_app.command("list")
def audit_list(
    actor: Annotated[str | None, typer.Option(help="A token's name.")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. task.create, or task.")] = None,
    page: int = 1,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Audit records, newest first."""
    query = {k: v for k, v in {"actor": actor, "action": action, "page": page}.items() if v is not None}
    with Api(url, token) as api:
        data = api.get("/api/v1/audit", params=query)
    rows = [(r["at"][:19], r["actor"], r["action"], r["target"], r["detail"]) for r in data["list"]]
    footer = page_footer(data, rows)
    emit(data, lambda: table(("AT", "ACTOR", "ACTION", "TARGET", "DETAIL"), rows, footer))
