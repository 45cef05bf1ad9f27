"""The cloud's data on disk is its user's only: data dir, file store, database, tokens and key."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cloud.db.engine import make_engine
from cloud.sealing import load_sealer
from cloud.tokens import load_tokens
from files.private import private_dir, private_tree
from files.store import FileStore


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The usual umask, so that a private mode comes from our code and not from the test's environment."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_data_dir_is_created_private_with_its_missing_parents(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "data"
    FileStore.prepare_data_dir(data)
    assert (mode(tmp_path / "srv"), mode(data)) == (0o700, 0o700)


def test_loose_data_dir_is_tightened_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    with caplog.at_level(logging.WARNING, "tiangong.files"):
        private_dir(data)
    assert mode(data) == 0o700
    assert f"tightened {data} from mode 755 to 700" in caplog.text


def test_file_store_keeps_blobs_private(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    writer = store.writer(1024)
    assert mode(writer.temp_path) == 0o600  # from the first byte
    writer.write(b"hello")
    dest = store.keep(writer.finish())
    assert mode(dest) == 0o600
    assert [mode(p) for p in (store.root, store.tmp_dir, dest.parent)] == [0o700] * 3


def test_file_store_left_loose_is_tightened_whole(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blob = tmp_path / "files" / "ab" / "abcdef"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    for p, m in ((tmp_path / "files", 0o755), (blob.parent, 0o755), (blob, 0o644)):
        p.chmod(m)
    with caplog.at_level(logging.WARNING, "tiangong.files"):
        FileStore(tmp_path)
    assert (mode(blob.parent.parent), mode(blob.parent), mode(blob)) == (0o700, 0o700, 0o600)
    assert "tightened 3 paths" in caplog.text


def test_private_tree_leaves_symlinked_targets_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("x")
    outside.chmod(0o644)
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    private_tree(root)
    assert mode(outside) == 0o644


def test_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    db = tmp_path / "tiangong.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        files = [db, db.with_name("tiangong.db-wal"), db.with_name("tiangong.db-shm")]
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        engine.dispose()


def test_loose_sqlite_files_are_tightened(tmp_path: Path) -> None:
    db = tmp_path / "tiangong.db"
    wal = tmp_path / "tiangong.db-wal"
    for p in (db, wal):
        p.touch()
        p.chmod(0o644)
    make_engine(f"sqlite:///{db}").dispose()
    assert (mode(db), mode(wal)) == (0o600, 0o600)


def test_tokens_and_key_are_private_new_or_old(tmp_path: Path) -> None:
    data = tmp_path / "data"
    load_tokens(data, None, None)
    load_sealer(data, None)
    names = ("admin.token", "agent.token", "secret.key")
    assert [mode(data / n) for n in names] == [0o600] * 3 and mode(data) == 0o700
    for n in names:
        (data / n).chmod(0o644)
    load_tokens(data, None, None)
    load_sealer(data, None)
    assert [mode(data / n) for n in names] == [0o600] * 3
