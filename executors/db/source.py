"""Where a database task's text comes from: `file_id` (a .sql/.json file or a .zip) before `command`."""

from __future__ import annotations

import zipfile
from pathlib import Path

from executors.archive import UnsafeArchive, read_member
from executors.base import RunContext
from executors.db.params import DbParams
from wire.tasks import Assignment

MAX_SOURCE_BYTES = 256 * 1024 * 1024
"""A script larger than this is refused rather than read into memory."""


class SourceError(ValueError):
    """The text cannot be read; the message names the field."""


async def read_source(task: Assignment, params: DbParams, ctx: RunContext, suffix: str = ".sql") -> tuple[str, str]:
    """(where it came from, text). A zip gives `params.file_name` or its first entry ending in `suffix`."""
    if not task.file_id:
        return "command", task.command
    try:
        path = await ctx.fetch_file(task.file_id)
    except Exception as exc:
        raise SourceError(f"file_id: cannot get file {task.file_id}: {exc}") from exc
    return _read(path, task.file_id, params.file_name, suffix)


def _read(path: Path, file_id: str, file_name: str | None, suffix: str) -> tuple[str, str]:
    try:
        if zipfile.is_zipfile(path):
            name, raw = read_member(path, file_name, suffix, max_total=MAX_SOURCE_BYTES)
            where = f"{file_id}:{name}"
        else:
            if path.stat().st_size > MAX_SOURCE_BYTES:
                raise SourceError(f"file_id: {file_id} is larger than {MAX_SOURCE_BYTES} bytes")
            raw, where = path.read_bytes(), file_id
    except UnsafeArchive as exc:
        raise SourceError(str(exc)) from exc
    except OSError as exc:
        raise SourceError(f"file_id: cannot read {file_id}: {exc.strerror or exc}") from exc
    try:
        return where, raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"file_id: {where} is not UTF-8 text (byte {exc.start})") from exc
