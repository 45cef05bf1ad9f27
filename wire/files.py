"""Uploaded files as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from wire.ids import parse_numbered


def format_file_id(n: int) -> str:
    return f"file-{n}"


def parse_file_id(value: str) -> int | None:
    """Accept `file-12` or `12`; None when it is neither."""
    return parse_numbered(value, "file-")


class FileRead(BaseModel):
    """One stored file. `path` is where the cloud keeps the content (shared by identical uploads)."""

    id: str
    name: str
    path: str
    size: int
    content_type: str
    md5: str
    sha256: str
    created_at: datetime
    updated_at: datetime


class FileList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    items: list[FileRead] = Field(alias="list")
    total: int
    page: int
    page_size: int
