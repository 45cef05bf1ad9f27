"""Uploads and downloads streamed in chunks (never a whole file in memory), with a progress bar on a
terminal; downloads are checked against the MD5 the cloud gives before they take their name."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cli.api import Api, endpoint
from cli.exitcodes import CliError, Code
from cli.output import stderr_is_tty

CHUNK = 1 << 20


@contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """An `advance(n_bytes)` function drawing a rich progress bar on stderr when it is a terminal; a no-op
    otherwise (a CI log wants no carriage-return animation)."""
    if not stderr_is_tty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


class CountingReader:
    """A binary file that reports each chunk read: httpx reads a multipart file part in chunks, so this
    is where the progress of an upload is seen. A rewind (a resent request) starts the count again."""

    def __init__(self, fh: IO[bytes], advance: Callable[[int], None]) -> None:
        self._fh = fh
        self._advance = advance
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self.sent += len(chunk)
        self._advance(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.sent:
            self._advance(-self.sent)
            self.sent = 0
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()  # httpx takes the Content-Length from fstat


def upload(api: Api, path: Path, name: str | None = None) -> tuple[dict[str, Any], bool]:
    """Upload `path` (streamed); the file's record and whether the cloud stored it anew (False: the same
    content was there already, under any name)."""
    import httpx

    try:
        fh = path.open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", Code.USAGE) from exc
    with fh, progress(f"uploading {path.name}", os.fstat(fh.fileno()).st_size) as advance:
        reader = CountingReader(fh, advance)
        with api.stream(
            "POST",
            "/api/v1/files",
            files={"file": (name or path.name, reader)},
            timeout=httpx.Timeout(300, connect=10),
        ) as resp:
            resp.read()
            return api.decode(resp), resp.status_code == 201


def download(api: Api, file_id: str, dest: Path | None) -> tuple[dict[str, Any], Path]:
    """Stream the file into `dest` (a directory, or the file's own name in the current one), checking
    its MD5; a mismatch leaves nothing under that name. Returns the record and the path written."""
    import httpx

    record = api.get(endpoint("/api/v1/files/{}", file_id))
    if dest is None:
        dest = Path(record["name"])
    elif dest.is_dir():
        dest = dest / record["name"]
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with (
            part.open("wb") as out,
            progress(f"downloading {record['name']}", record["size"]) as advance,
            api.stream(
                "GET", endpoint("/api/v1/files/{}/content", file_id), timeout=httpx.Timeout(60, connect=10)
            ) as resp,
        ):
            for chunk in resp.iter_bytes(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
        if digest.hexdigest() != record["md5"]:
            raise CliError(
                f"{file_id}: the content received has MD5 {digest.hexdigest()}, the cloud's record says "
                f"{record['md5']}: not saved",
                Code.REFUSED,
            )
        os.replace(part, dest)
    except OSError as exc:
        raise CliError(f"cannot write {dest}: {exc.strerror or exc}", Code.USAGE) from exc
    finally:
        part.unlink(missing_ok=True)
    return record, dest
