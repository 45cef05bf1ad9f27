"""Files a task names by `file_id`: found on this machine, or downloaded once into the agent's cache
(keyed by MD5, verified after download; tasks needing the same file at once share one download)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.client import CloudClient, Rejected


def _cache_name(name: str) -> str:
    """The cloud cleans names on upload; never trust that with a path on this machine, though."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base if base not in ("", ".", "..") else "file"


class FileFetchError(Exception):
    """The file could not be had; the message says why, naming the file."""


class FileCache:
    """The agent's download cache: `<cache_dir>/<md5>/<name>` (the name keeps the file's extension)."""

    def __init__(self, client: CloudClient, cache_dir: Path) -> None:
        self.client = client
        self.cache_dir = cache_dir
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, file_id: str) -> Path:
        """A local path with the file's content, downloading it if this agent does not have it yet."""
        try:
            meta = await self.client.file_info(file_id)
        except Rejected as exc:
            raise FileFetchError(f"file_id: {file_id} is not available from the cloud ({exc.message})") from exc
        md5 = str(meta["md5"])
        path = self.cache_dir / md5 / _cache_name(str(meta["name"]))
        lock = self._locks.setdefault(md5, asyncio.Lock())
        async with lock:
            if path.is_file():
                return path
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.parent / f".{secrets.token_hex(6)}.part"
            try:
                got = await self.client.download(file_id, part)
                if got != md5:
                    raise FileFetchError(
                        f"file_id: download of {file_id} failed its MD5 check (expected {md5}, got {got})"
                    )
                os.replace(part, path)
            except Rejected as exc:
                raise FileFetchError(f"file_id: download of {file_id} failed ({exc.message})") from exc
            finally:
                part.unlink(missing_ok=True)
        return path


async def find_file(file_id: str, params: Mapping[str, Any], workdir: Path, cache: FileCache) -> Path:
    """DESIGN §4 lookup order: `params.file_path`, `<workdir>/tmp/<id>`, `/tmp/<id>`, then the cloud."""
    given = params.get("file_path")
    candidates = [Path(given)] if isinstance(given, str) and given else []
    candidates += [workdir / "tmp" / file_id, Path("/tmp") / file_id]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return await cache.get(file_id)
