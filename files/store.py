"""Blob storage on disk: uploads stream into a temp file while being hashed, then are renamed into
place under their MD5 (`files/<md5[:2]>/<md5>`), so identical content is stored once."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from files.private import DIR_MODE, FILE_MODE, is_loose, private_dir, private_tree

CHUNK = 1024 * 1024
"""Buffered bytes handed to a worker thread at once for hashing and writing."""


class TooLarge(Exception):
    """The upload passed the size limit; the message names the limit."""


@dataclass(frozen=True)
class Received:
    """A fully received upload, still in its temp file."""

    temp_path: Path
    size: int
    md5: str
    sha256: str


class BlobWriter:
    """Receives one upload: write and hash chunk by chunk, with a size limit. Memory stays flat.

    Not thread-safe; the caller hands it one chunk at a time (from a worker thread if it likes).
    """

    def __init__(self, store: FileStore, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.temp_path = store.tmp_dir / f"upload-{secrets.token_hex(8)}"
        # 0600 from the first byte: the content is the uploader's business only.
        fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._fh = open(fd, "wb")  # noqa: SIM115 - closed in finish()/discard()

    def write(self, data: bytes) -> None:
        """Append `data`; raises TooLarge (the temp file stays until discard()) past the limit."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLarge(f"file: larger than the upload limit of {self.max_bytes} bytes (TIANGONG_MAX_UPLOAD_BYTES)")
        self._md5.update(data)
        self._sha256.update(data)
        self._fh.write(data)

    def finish(self) -> Received:
        """Flush to disk and return what was received."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return Received(self.temp_path, self.size, self._md5.hexdigest(), self._sha256.hexdigest())

    def discard(self) -> None:
        """Drop the partial upload (too large, aborted, or a failed request)."""
        self._fh.close()
        self.temp_path.unlink(missing_ok=True)


class FileStore:
    """The blob directory tree under `<data_dir>/files`, with its own temp dir on the same filesystem
    (so the final rename is atomic). Directories are 0700 and blobs 0600: only the cloud's user reads them."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve() / "files"
        self.tmp_dir = self.root / "tmp"
        if is_loose(self.root):
            private_tree(self.root)  # left readable by an older version: its blobs too
        private_dir(self.root)
        private_dir(self.tmp_dir)

    @staticmethod
    def prepare_data_dir(data_dir: Path) -> None:
        """The cloud's data dir (database, tokens, keys, files): created 0700, tightened if looser."""
        private_dir(data_dir)

    def blob_path(self, md5: str) -> Path:
        return self.root / md5[:2] / md5

    def writer(self, max_bytes: int) -> BlobWriter:
        return BlobWriter(self, max_bytes)

    def keep(self, received: Received) -> Path:
        """Move a received upload to its place; identical content already there is simply replaced."""
        dest = self.blob_path(received.md5)
        dest.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.replace(received.temp_path, dest)
        return dest

    def remove(self, md5: str) -> None:
        self.blob_path(md5).unlink(missing_ok=True)

    def clean_tmp(self) -> int:
        """Remove temp files a crash left behind; returns how many. Run at start, before serving."""
        removed = 0
        for leftover in self.tmp_dir.glob("upload-*"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed
