"""Uploaded files as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wire.ids import parse_numbered
from wire.tasks import TaskRead


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


class FileDistribute(BaseModel):
    """Body of POST /api/v1/files/{id}/distribute: place the file on each agent (a `file` task each)."""

    model_config = ConfigDict(extra="forbid")

    agent_ids: list[str] = Field(min_length=1, description="The agents to place the file on, each once.")
    params: dict[str, Any] = Field(
        description='The file task\'s params: `path` (required), `mode` (e.g. "0644"), `overwrite`.'
    )
    exec_timeout: int | None = Field(None, ge=1, le=86_400, description="Seconds each placement may take.")


class FileDistribution(BaseModel):
    """The answer of POST /api/v1/files/{id}/distribute: the file task created for each agent, in order."""

    file_id: str
    tasks: list[TaskRead]
