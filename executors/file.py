"""`file`: place an uploaded file on the agent at `params.path`, atomically (temp file + rename)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from executors.base import BaseExecutor, Outcome, RunContext, Stopped, strict_flag, until_stopped
from wire.tasks import Assignment, TaskRequest, TaskStatus


def parse_mode(value: Any) -> int | None:
    """`params.mode` as permission bits: an int (0o644 / 420) or an octal string ("0644", "644")."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError('params.mode: must be an octal string like "0644" or an integer')
    try:
        mode = int(value, 8) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError('params.mode: must be an octal string like "0644" or an integer') from None
    if not 0 <= mode <= 0o7777:
        raise ValueError("params.mode: must be between 0000 and 7777 (octal)")
    return mode


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("params.path: is required: where to put the file on the agent")
    return value


class FileParams(BaseModel):
    """`params` of a file task."""

    model_config = ConfigDict(extra="allow")

    path: Annotated[str, BeforeValidator(_path)] = Field(None, validate_default=True, description="Destination.")
    mode: Annotated[int | None, BeforeValidator(parse_mode)] = Field(None, description="Permission bits.")
    overwrite: Annotated[bool, BeforeValidator(strict_flag("overwrite"))] = Field(False, description="Replace a file.")


class FileExecutor(BaseExecutor):
    """Writes the file next to its destination, then renames it into place, so readers never see half."""

    type: ClassVar[str] = "file"
    default_exec_timeout: ClassVar[int] = 600
    params_model = FileParams

    def check(self, req: TaskRequest, params: FileParams) -> None:
        """A file to place is required."""
        if not req.file_id:
            raise ValueError("file_id: is required for file tasks (upload with POST /api/v1/files)")

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        try:
            dest = destination(str(task.params["path"]), ctx.workdir)
            # Downloading may take long and can stop at any point; placing is local and is never cut short,
            # so a stopped task never leaves a file half in place.
            src = await until_stopped(ctx, ctx.fetch_file(task.file_id))
            size, md5 = await asyncio.to_thread(
                place, src, dest, parse_mode(task.params.get("mode")), bool(task.params.get("overwrite", False))
            )
        except Stopped as stop:
            error = "canceled" if stop.reason == "canceled" else f"execution timed out after {task.exec_timeout} s"
            return Outcome(stop.status, error=error)
        except Exception as exc:  # disk errors, an existing file, a failed download, `~nobody`: each message says which
            return Outcome(TaskStatus.failed, error=str(exc) or type(exc).__name__)
        ctx.log(f"wrote {dest} ({size} bytes, md5 {md5})")
        return Outcome(TaskStatus.success, result=f"{dest}\n", data={"path": str(dest), "size": size, "md5": md5})


def destination(path: str, workdir: Path) -> Path:
    """`params.path`, with `~` expanded; a relative path is taken under the agent's workdir."""
    dest = Path(path).expanduser()
    return dest if dest.is_absolute() else workdir / dest


def place(src: Path, dest: Path, mode: int | None, overwrite: bool) -> tuple[int, str]:
    """Copy `src` to `dest` through a temp file in the same directory; returns (size, md5)."""
    if dest.is_dir():
        raise ValueError(f"params.path: {dest} is a directory; give the file's full path")
    if dest.exists() and not overwrite:
        raise ValueError(f"params.path: {dest} already exists; set params.overwrite to true to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(dest.name), suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            while chunk := inp.read(1024 * 1024):
                md5.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        elif dest.exists():
            shutil.copymode(dest, tmp)  # replacing a file keeps its permissions unless told otherwise
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size, md5.hexdigest()


def _temp_prefix(name: str) -> str:
    """`.<name>.`, the name cut to 100 bytes: a destination name near the file system's 255-byte limit
    (`部署` and other non-ASCII names take 3 bytes a character) must still leave room for the temp name."""
    return "." + os.fsencode(name)[:100].decode("utf-8", "ignore") + "."
