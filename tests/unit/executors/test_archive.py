"""Reading a member of an uploaded zip: escapes and bombs are refused."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from executors.archive import UnsafeArchive, read_member


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_picks_named_member_else_first_sql(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", {"README": b"hi", "b/2.sql": b"two", "a/1.sql": b"one"})
    assert read_member(z) == ("b/2.sql", b"two")  # the first .sql in archive order
    assert read_member(z, file_name="1.sql") == ("a/1.sql", b"one")
    with pytest.raises(UnsafeArchive, match=r"params\.file_name"):
        read_member(z, file_name="missing.sql")


@pytest.mark.parametrize("bad", ["../evil.sql", "/etc/evil.sql", "a/../../evil.sql", "C:/evil.sql", "..\\evil.sql"])
def test_escaping_entries_are_refused(tmp_path: Path, bad: str) -> None:
    z = make_zip(tmp_path / "e.zip", {"ok.sql": b"select 1;", bad: b"drop"})
    with pytest.raises(UnsafeArchive, match="outside the archive"):
        read_member(z)


def test_total_size_is_capped(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "big.zip", {"a.sql": b"\0" * 2_000_000, "b.sql": b"\0" * 2_000_000})
    with pytest.raises(UnsafeArchive, match="more than"):
        read_member(z, max_total=3_000_000)
    assert read_member(z, max_total=5_000_000)[0] == "a.sql"


def test_header_lying_about_size_is_caught(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "lie.zip", {"a.sql": b"x" * 100_000})
    raw = bytearray(z.read_bytes())
    # Patch the declared uncompressed size (central directory) down to 10 bytes.
    with zipfile.ZipFile(z) as zf:
        info = zf.infolist()[0]
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    lh = info.header_offset
    raw[lh + 22 : lh + 26] = (10).to_bytes(4, "little")
    z.write_bytes(bytes(raw))
    with pytest.raises((UnsafeArchive, zipfile.BadZipFile)):
        read_member(z)


def test_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "x.zip"
    p.write_bytes(b"plain text")
    with pytest.raises(UnsafeArchive, match="not a valid zip"):
        read_member(p)
