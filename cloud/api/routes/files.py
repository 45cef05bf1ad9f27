"""Files: streaming upload (deduplicated by MD5), listing, metadata, download with Range/ETag, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy import Connection

from cloud.access import Principal
from cloud.api.deps import AppDep, CallerAuth, PrincipalDep, require_caller_or_agent
from cloud.api.errors import describe_validation
from cloud.api.guard import GuardedRoute
from cloud.api.multipart import receive_file
from cloud.api.scopes import require_create
from cloud.policy import enforce
from cloud.services import audit
from cloud.services import files as svc
from cloud.services import tasks as tasks_svc
from cloud.services.errors import BadRequest, Forbidden, ServiceError
from cloud.services.present import file_read, task_read
from files.names import content_disposition
from wire.credentials import Action, TokenKind
from wire.files import FileDistribute, FileDistribution, FileList, FileRead, format_file_id
from wire.tasks import TaskCreate, format_task_id

router = APIRouter(prefix="/api/v1/files", tags=["files"], route_class=GuardedRoute)
# Agents download the files their tasks name, so reading takes a caller's token or an agent token.
ReadAuth = Depends(require_caller_or_agent)


def _may_read(conn: Connection, principal: Principal, row: svc.FileRow) -> None:
    """A caller needs files:read; an agent token reads only a file one of its agent's tasks names."""
    if principal.kind is TokenKind.agent:
        if principal.agent_id is None or not svc.named_by_agent_task(conn, row, principal.agent_id):
            raise Forbidden(f"no task of agent {principal.agent_id!r} names {format_file_id(row.id)}")
        return
    principal.require(Action.files_read)


# The body is streamed by hand (cloud.api.multipart), so FastAPI cannot describe it: this does.
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            },
        },
    },
}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The content, with the type given at upload; `Content-Disposition` carries the name "
        "(`filename*=UTF-8''...` when it is not plain ASCII)",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {"description": "The part a `Range` header asked for", "content": {"*/*": {}}},
    304: {"description": "`If-None-Match` named this content's ETag"},
    410: {"description": "The record exists but its content is missing from the store"},
}


@router.post(
    "",
    status_code=201,
    response_model=FileRead,
    dependencies=[CallerAuth],
    responses={200: {"description": "The same content was uploaded before: its record, nothing stored"}},
    openapi_extra={"requestBody": _UPLOAD_BODY},
)
async def upload_file(request: Request, principal: PrincipalDep, app: AppDep) -> JSONResponse:
    """Upload with `curl -F file=@path`: 201 with the new record, or 200 with the record of identical content.
    The name is kept as given (any script, `部署.sql`), without path, `..` or control characters."""
    principal.require(Action.files_write)
    upload = await receive_file(
        request,
        app.store,
        app.settings.max_upload_bytes,
        app.settings.request_idle_timeout_seconds,
        app.settings.min_body_rate_bytes,
    )
    try:
        with app.db.transaction() as conn:
            row, created = svc.save_upload(conn, app.store, upload.received, upload.filename, upload.content_type)
            body = file_read(row, app.store)
            if created:
                audit.record(conn, principal, "file.upload", body.id, name=body.name, md5=body.md5)
    finally:
        upload.received.temp_path.unlink(missing_ok=True)  # already moved or dropped, unless something failed
    app.metrics.uploads.labels(outcome="stored" if created else "deduplicated").inc()
    app.metrics.upload_bytes.inc(upload.received.size)
    return JSONResponse(body.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("", response_model=FileList, dependencies=[CallerAuth])
async def list_files(
    principal: PrincipalDep,
    app: AppDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 10,
    q: Annotated[str | None, Query(max_length=200, description="Part of the name.")] = None,
) -> FileList:
    principal.require(Action.files_read)
    with app.db.transaction() as conn:
        rows, total = svc.list_files(conn, q, page, page_size)
    return FileList(items=[file_read(r, app.store) for r in rows], total=total, page=page, page_size=page_size)


@router.get("/{file_id}", response_model=FileRead, dependencies=[ReadAuth])
async def get_file(file_id: str, principal: PrincipalDep, app: AppDep) -> FileRead:
    with app.db.transaction() as conn:
        row = svc.get_file(conn, file_id)
        _may_read(conn, principal, row)
        return file_read(row, app.store)


@router.get("/{file_id}/download", dependencies=[ReadAuth], response_class=FileResponse, responses=_DOWNLOAD_RESPONSES)
@router.get("/{file_id}/content", dependencies=[ReadAuth], response_class=FileResponse, responses=_DOWNLOAD_RESPONSES)
async def download_file(
    file_id: str, principal: PrincipalDep, app: AppDep, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """The bytes, streamed; `ETag` is the MD5, `Range` gives 206, `If-None-Match` gives 304."""
    with app.db.transaction() as conn:
        row = svc.get_file(conn, file_id)
        _may_read(conn, principal, row)
    etag = f'"{row.md5}"'
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    path = app.store.blob_path(row.md5)
    if not path.is_file():
        return JSONResponse({"error": f"file {file_id}: its content is missing from the store"}, status_code=410)
    app.metrics.file_downloads.inc()
    # Starlette's own `filename=` sends only `filename*` for a non-ASCII name, without the fallback.
    headers = {"ETag": etag, "Content-Disposition": content_disposition(row.name)}
    # Checked again: a record stored before uploads were checked may hold a type no header can carry.
    media_type = svc.content_type_for(row.name, row.content_type)
    return FileResponse(path, media_type=media_type, headers=headers)


@router.post("/{file_id}/distribute", status_code=201, response_model=FileDistribution, dependencies=[CallerAuth])
async def distribute_file(file_id: str, body: FileDistribute, principal: PrincipalDep, app: AppDep) -> FileDistribution:
    """A `file` task per agent placing this file at `params.path`; all or none are created (a refusal names
    `agent_ids[i]`). Follow each task as usual; the tasks are listed in the order of `agent_ids`."""
    limit = app.settings.max_distribute_agents
    if len(body.agent_ids) > limit:
        raise BadRequest(f"agent_ids: {len(body.agent_ids)} agents; at most {limit} per call (max_distribute_agents)")
    if len(set(body.agent_ids)) != len(body.agent_ids):
        raise BadRequest("agent_ids: names an agent more than once")
    requests = []
    for i, agent_id in enumerate(body.agent_ids):
        try:
            requests.append(
                TaskCreate(
                    agent_id=agent_id, type="file", file_id=file_id, params=body.params, exec_timeout=body.exec_timeout
                )
            )
        except ValidationError as exc:
            raise BadRequest(f"agent_ids[{i}]: {describe_validation(exc)}") from None
    for req in requests:
        await enforce(app.policy, req)
    created = []
    with app.db.transaction() as conn:
        svc.get_file(conn, file_id)  # 404 before anything else
        for i, req in enumerate(requests):
            try:
                require_create(conn, app.agents, principal, req, answered=False)
                task, _ = tasks_svc.create_task(
                    conn,
                    req,
                    agents=app.agents,
                    offline_after=app.settings.agent_offline_seconds,
                    sealer=app.sealer,
                    default_expires_in=app.settings.task_expires_seconds,
                )
            except ServiceError as exc:
                exc.message = f"agent_ids[{i}] ({req.agent_id}): {exc.message}"
                raise
            audit.record(conn, principal, "task.create", format_task_id(task.id), agent_id=req.agent_id, type="file")
            created.append(task)
    return FileDistribution(file_id=file_id, tasks=[task_read(t) for t in created])


@router.delete("/{file_id}", status_code=204, dependencies=[CallerAuth])
async def delete_file(file_id: str, principal: PrincipalDep, app: AppDep) -> Response:
    """Delete the record and its content; 409 while an unfinished task names the file."""
    principal.require(Action.files_write)
    with app.db.transaction() as conn:
        row = svc.get_file(conn, file_id)
        svc.delete_file(conn, app.store, row)
        audit.record(conn, principal, "file.delete", format_file_id(row.id), name=row.name)
    return Response(status_code=204)
