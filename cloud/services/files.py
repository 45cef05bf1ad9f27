"""File records: one per distinct content (MD5). The bytes live in the file store (files/)."""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.db.models import FILES as F
from cloud.db.models import TASKS as T
from cloud.db.types import utcnow
from cloud.services.errors import Conflict, NotFound
from files.names import clean_name
from files.store import FileStore, Received
from wire.files import format_file_id, parse_file_id
from wire.tasks import TaskStatus

FileRow = Row[Any]


# `type/subtype` and optional parameters, printable ASCII: it goes back out as a download's header.
_MEDIA_TYPE = re.compile(r"[\w!#$&^.+-]+/[\w!#$&^.+-]+(\s*;[ -~]*)?", re.ASCII)
MAX_CONTENT_TYPE = 127


def content_type_for(name: str, declared: str | None) -> str:
    """The part's own Content-Type when it is a valid media type saying something useful, else a guess
    from the name (a malformed one would be stored, then break the download's header)."""
    declared = (declared or "").strip()
    if len(declared) > MAX_CONTENT_TYPE or not _MEDIA_TYPE.fullmatch(declared):
        declared = ""
    if declared and declared.lower() != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def save_upload(
    conn: Connection, store: FileStore, received: Received, raw_name: str | None, declared_type: str | None
) -> tuple[FileRow, bool]:
    """Keep a received upload: (record, created). Content already stored returns its record and
    stores nothing new; the UNIQUE md5 settles two identical uploads racing each other."""
    existing = conn.execute(select(F).where(F.c.md5 == received.md5)).first()
    if existing is not None:
        received.temp_path.unlink(missing_ok=True)
        return existing, False
    name = clean_name(raw_name)
    now = utcnow()
    store.keep(received)  # identical bytes under the same name, so a racing twin may replace it harmlessly
    values = {
        "name": name,
        "size": received.size,
        "content_type": content_type_for(name, declared_type),
        "md5": received.md5,
        "sha256": received.sha256,
        "created_at": now,
        "updated_at": now,
    }
    try:
        with conn.begin_nested():
            row = conn.execute(insert(F).values(**values).returning(*F.c)).one()
    except IntegrityError:
        existing = conn.execute(select(F).where(F.c.md5 == received.md5)).first()
        if existing is None:
            raise
        return existing, False
    if conn.execute(select(F.c.id).where(F.c.name == name, F.c.id != row.id).limit(1)).first() is not None:
        # Seed 004: a name another record already has gets the new file's id as a prefix.
        row = conn.execute(
            update(F).where(F.c.id == row.id).values(name=f"{format_file_id(row.id)}_{name}").returning(*F.c)
        ).one()
    return row, True


def get_file(conn: Connection, file_id: str) -> FileRow:
    """The record named `file-<n>` (or `<n>`), or NotFound."""
    n = parse_file_id(file_id)
    row = conn.execute(select(F).where(F.c.id == n)).first() if n is not None else None
    if row is None:
        raise NotFound(f"file not found: {file_id}")
    return row


def list_files(conn: Connection, q: str | None, page: int, page_size: int) -> tuple[list[FileRow], int]:
    """One page of records, newest first; `q` matches part of the name."""
    conds = [F.c.name.contains(q, autoescape=True)] if q else []
    total = conn.execute(select(func.count()).select_from(F).where(*conds)).scalar_one()
    rows = conn.execute(
        select(F).where(*conds).order_by(F.c.id.desc()).offset((page - 1) * page_size).limit(page_size)
    ).all()
    return list(rows), int(total)


def delete_file(conn: Connection, store: FileStore, row: FileRow) -> None:
    """Delete the record and its bytes; 409 while a pending or running task names it."""
    fid = format_file_id(row.id)
    busy = conn.execute(
        select(T.c.id)
        .where(T.c.file_id.in_([fid, str(row.id)]), T.c.status.in_([TaskStatus.pending, TaskStatus.running]))
        .limit(1)
    ).first()
    if busy is not None:
        raise Conflict(f"file {fid} is used by task task-{busy.id}, which has not finished")
    conn.execute(F.delete().where(F.c.id == row.id))
    store.remove(row.md5)  # md5 is unique, so no other record shares these bytes


def named_by_agent_task(conn: Connection, row: FileRow, agent_id: str) -> bool:
    """Whether some task of `agent_id` names this file: what an agent token may download."""
    fid = format_file_id(row.id)
    query = select(T.c.id).where(T.c.file_id.in_([fid, str(row.id)]), T.c.agent_id == agent_id).limit(1)
    return conn.execute(query).first() is not None
