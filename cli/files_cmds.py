"""`tiangong files ...`: upload (streamed, with progress), list, show, download (MD5-checked), delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.api import DEFAULT_URL, Api, TokenOpt, UrlOpt, delete_record, endpoint
from cli.exitcodes import EPILOG
from cli.output import JsonOpt, emit, fields, note, page_footer, size, table

app = typer.Typer(no_args_is_help=True, epilog=EPILOG)


@app.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(help="The file to upload.")],
    name: Annotated[str | None, typer.Option(help="Store it under this name (default: the file's).")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Upload a file and print its id (`FILE_ID=$(tiangong files upload app.tgz)`); content already
    stored is not stored twice, and its existing record is given."""
    from cli.transfer import upload as send

    with Api(url, token) as api:
        record, created = send(api, path, name)
    how = "uploaded" if created else "already stored (same MD5), not uploaded again"
    note(f"{record['id']} {record['name']}: {size(record['size'])}, md5 {record['md5']}, {how}")
    emit({**record, "created": created}, lambda: print(record["id"]))


@app.command("list")
def list_(
    q: Annotated[str | None, typer.Option(help="Part of the name.")] = None,
    page: int = 1,
    page_size: Annotated[int, typer.Option(help="Files per page, at most 100.")] = 20,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """List uploaded files, newest first."""
    query = {k: v for k, v in {"q": q, "page": page, "page_size": page_size}.items() if v is not None}
    with Api(url, token) as api:
        data = api.get("/api/v1/files", params=query)
    rows = [(f["id"], f["name"], size(f["size"]), f["md5"], f["created_at"][:19]) for f in data["list"]]
    footer = page_footer(data, rows)
    emit(data, lambda: table(("ID", "NAME", "SIZE", "MD5", "CREATED"), rows, footer))


@app.command("get")
def get(file_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Show a file's record: name, size, MD5, SHA-256."""
    with Api(url, token) as api:
        record = api.get(endpoint("/api/v1/files/{}", file_id))
    emit(record, lambda: fields(list(record.items())))


@app.command("download")
def download(
    file_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File or directory to write (default: its name, here).")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Download a file (streamed), checking it against the MD5 the cloud gives."""
    from cli.transfer import download as fetch

    with Api(url, token) as api:
        record, written = fetch(api, file_id, output)
    document: dict[str, Any] = {**record, "written_to": str(written)}
    emit(document, lambda: print(written))
    note(f"{file_id}: {size(record['size'])} written to {written}, md5 {record['md5']} checked")


@app.command("delete")
def delete(file_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", json_: JsonOpt = False) -> None:
    """Delete a file (refused while a pending or running task names it)."""
    delete_record(url, token, endpoint("/api/v1/files/{}", file_id), file_id, f"{file_id} deleted")


@app.command("distribute")
def distribute(
    file_id: str,
    agents: Annotated[list[str], typer.Option("--agent", "-a", help="An agent to place it on (repeat).")],
    path: Annotated[str, typer.Option(help="Where to put it on each agent.")],
    mode: Annotated[str | None, typer.Option(help='Permission bits, e.g. "0644".')] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a file already there.")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    json_: JsonOpt = False,
) -> None:
    """Place FILE_ID on each agent: a `file` task per agent, all or none created. Follow them with
    `tiangong task wait`."""
    params: dict[str, object] = {"path": path, "overwrite": overwrite}
    if mode is not None:
        params["mode"] = mode
    with Api(url, token) as api:
        made = api.post(endpoint("/api/v1/files/{}/distribute", file_id), json={"agent_ids": agents, "params": params})
    rows = [(t["id"], t["agent_id"], t["status"]) for t in made["tasks"]]
    emit(made, lambda: table(("TASK", "AGENT", "STATUS"), rows))
