"""Reading one member of an uploaded .zip safely: no path escapes, no zip bombs."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 1024**3
"""Uncompressed bytes the whole archive may declare."""
_READ_CHUNK = 1024 * 1024


class UnsafeArchive(ValueError):
    """The archive is refused; the message names the entry and the rule it breaks."""


def check_archive(zf: zipfile.ZipFile, max_entries: int = MAX_ENTRIES, max_total: int = MAX_TOTAL_BYTES) -> None:
    """Refuse absolute or escaping entry names, too many entries, or too many declared bytes."""
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise UnsafeArchive(f"file_id: the zip has {len(infos)} entries; at most {max_entries} are allowed")
    total = 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
            raise UnsafeArchive(f"file_id: zip entry {info.filename!r} points outside the archive")
        total += info.file_size
        if total > max_total:
            raise UnsafeArchive(f"file_id: the zip unpacks to more than {max_total} bytes")


def pick_member(zf: zipfile.ZipFile, file_name: str | None, suffix: str = ".sql") -> zipfile.ZipInfo:
    """`file_name` (the full entry name, or its base name), else the first entry ending in `suffix`."""
    files = [i for i in zf.infolist() if not i.is_dir()]
    if file_name:
        for info in files:
            if info.filename == file_name or PurePosixPath(info.filename).name == file_name:
                return info
        raise UnsafeArchive(f"params.file_name: {file_name!r} is not in the zip")
    for info in files:
        if info.filename.lower().endswith(suffix):
            return info
    raise UnsafeArchive(f"file_id: the zip holds no {suffix} file (name one with params.file_name)")


def read_member(
    path: Path, file_name: str | None = None, suffix: str = ".sql", max_total: int = MAX_TOTAL_BYTES
) -> tuple[str, bytes]:
    """(entry name, content) of the chosen member, after checking the whole archive.

    The content is read against the size the entry declares, so a header that lies about it (a zip
    bomb) is caught while reading, not after memory runs out.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            check_archive(zf, max_total=max_total)
            info = pick_member(zf, file_name, suffix)
            out = bytearray()
            with zf.open(info) as fh:
                while chunk := fh.read(_READ_CHUNK):
                    out += chunk
                    if len(out) > info.file_size:
                        raise UnsafeArchive(f"file_id: zip entry {info.filename!r} unpacks past its declared size")
            return info.filename, bytes(out)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"file_id: not a valid zip file ({exc})") from exc
