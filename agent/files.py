"""Files a task names by `file_id`, from the agent's private cache (DESIGN §4 RunContext.fetch_file).

The cache is `<data_dir>/cache/files/<md5>/<name>` (the name keeps the file's extension), directories
0700 and files 0600. Every use checks the cached copy against the MD5 the cloud gives for the file and
downloads it again when it differs, so a copy changed after download never runs. Nothing is looked for
in shared or world-writable directories (the system temp dir): a file planted there must not run.
`params.file_path` names a local copy to use instead of downloading: it is copied into the cache and
checked against the MD5 like a download; a copy that differs fails the task. Tasks needing the same file
at once share one download.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.client import CloudClient, Rejected
from agent.private import FILE_MODE, private_dir

log = logging.getLogger("tiangong.agent")

CHUNK = 1024 * 1024


def _cache_name(name: str) -> str:
    """The cloud cleans names on upload; never trust that with a path on this machine, though."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base if base not in ("", ".", "..") else "file"


class FileFetchError(Exception):
    """The file could not be had; the message says why, naming the file."""


def md5_of(path: Path) -> str | None:
    """The MD5 of the regular file at `path` (a symlink is not followed); None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # NONBLOCK: a planted FIFO must not hang
    except OSError:
        return None
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        md5 = hashlib.md5(usedforsecurity=False)
        while chunk := fh.read(CHUNK):
            md5.update(chunk)
    return md5.hexdigest()


def _copy_hashing(source: Path, dest: Path) -> str:
    """Copy `source` into `dest` (created already, 0600) and return the MD5 of the bytes copied."""
    md5 = hashlib.md5(usedforsecurity=False)
    with source.open("rb") as src, dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            md5.update(chunk)
            out.write(chunk)
    return md5.hexdigest()


class FileCache:
    """The agent's private download cache."""

    def __init__(self, client: CloudClient, cache_dir: Path) -> None:
        self.client = client
        self.cache_dir = cache_dir
        private_dir(cache_dir, deep=True)
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, file_id: str, file_path: object = None) -> Path:
        """A private path holding the file's content as the cloud has it, checked now.

        `file_path` (params.file_path), when that file exists, is the source instead of a download (copied,
        then checked).
        """
        try:
            meta = await self.client.file_info(file_id)
        except Rejected as exc:
            raise FileFetchError(f"file_id: {file_id} is not available from the cloud ({exc.message})") from exc
        md5 = str(meta["md5"])
        path = self.cache_dir / md5 / _cache_name(str(meta["name"]))
        local = Path(file_path) if isinstance(file_path, str) and file_path else None
        async with self._locks.setdefault(md5, asyncio.Lock()):
            if local is not None and local.is_file():
                got = await self._fill(path, md5, lambda part: asyncio.to_thread(_copy_hashing, local, part))
                if got != md5:
                    raise FileFetchError(
                        f"params.file_path: {local} is not the content of {file_id} (MD5 {got}, expected {md5})"
                    )
                return path
            cached = await asyncio.to_thread(md5_of, path)
            if cached == md5:
                return path
            if cached is not None or path.is_symlink():
                log.warning("cached copy of %s at %s was changed (MD5 %s): downloading it again", file_id, path, cached)
            try:
                got = await self._fill(path, md5, lambda part: self.client.download(file_id, part))
            except Rejected as exc:
                raise FileFetchError(f"file_id: download of {file_id} failed ({exc.message})") from exc
            if got != md5:
                raise FileFetchError(f"file_id: download of {file_id} failed its MD5 check (expected {md5}, got {got})")
        return path

    async def _fill(self, path: Path, md5: str, write: Callable[[Path], Awaitable[str]]) -> str:
        """Write a new copy through a private temp file, which replaces `path` only when its MD5 is `md5`.
        Returns the MD5 of what was written."""
        private_dir(path.parent)
        part = path.parent / f".{secrets.token_hex(6)}.part"
        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        try:
            got = await write(part)
            if got == md5:
                os.replace(part, path)
            return got
        finally:
            part.unlink(missing_ok=True)
