"""The agent's private paths: its token file, its data dir and outbox modes, and how a cached file is read."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.files import md5_of
from agent.outbox import Outbox
from agent.private import private_dir
from agent.settings import AgentSettings


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The usual umask, so that a private mode comes from our code and not from the test's environment."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(autouse=True)
def no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TIANGONG_")]:
        monkeypatch.delenv(name)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "agent.token"
    path.write_text("  tok-123\n")
    path.chmod(0o600)
    assert AgentSettings(agent_token_file=path).agent_token.get_secret_value() == "tok-123"


def test_token_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.token"
    path.write_text("tok-env\n")
    monkeypatch.setenv("TIANGONG_AGENT_TOKEN_FILE", str(path))
    assert AgentSettings().agent_token.get_secret_value() == "tok-env"


@pytest.mark.parametrize(("content", "expected"), [(None, "cannot read"), ("\n", "is empty")], ids=["missing", "empty"])
def test_unusable_token_file_names_the_file(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "agent.token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=expected) as info:
        AgentSettings(agent_token_file=path)
    assert str(path) in str(info.value)


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.token"
    path.write_text("a")
    with pytest.raises(ValueError, match="not both"):
        AgentSettings(agent_token="b", agent_token_file=path)


def test_loose_token_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "agent.token"
    path.write_text("tok")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "tiangong.agent"):
        AgentSettings(agent_token_file=path)
    assert "readable by the group or others" in caplog.text and "tok\n" not in caplog.text


def test_token_from_a_pipe_is_read_once_and_the_pipe_closed() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"tok-pipe\n")
    os.close(write_end)
    settings = AgentSettings(agent_token_file=Path(f"/dev/fd/{read_end}"))
    assert settings.agent_token.get_secret_value() == "tok-pipe"
    with pytest.raises(OSError):
        os.fstat(read_end)  # closed: not left open for the agent's life


def test_new_data_dir_and_outbox_are_private(tmp_path: Path) -> None:
    data = tmp_path / "a" / "b" / "agent-data"
    private_dir(data)
    outbox = Outbox(data / "outbox")
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", data, outbox.root)] == [0o700] * 4


def test_loose_tree_is_tightened_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    (cache / "d").mkdir(parents=True, mode=0o755)
    cache.chmod(0o755)
    (cache / "d" / "f").write_text("x")
    (cache / "d" / "f").chmod(0o644)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not ours")
    elsewhere.chmod(0o644)
    (cache / "link").symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, "tiangong.agent"):
        private_dir(cache, deep=True)
    assert (mode(cache), mode(cache / "d"), mode(cache / "d" / "f")) == (0o700, 0o700, 0o600)
    assert mode(elsewhere) == 0o644  # a symlink inside is not followed
    assert f"tightened {cache} (3 paths)" in caplog.text


def test_md5_of_reads_regular_files_only(tmp_path: Path) -> None:
    regular = tmp_path / "f"
    regular.write_bytes(b"abc")
    assert md5_of(regular) == "900150983cd24fb0d6963f7d28e17f72"
    link = tmp_path / "link"
    link.symlink_to(regular)
    assert md5_of(link) is None
    assert md5_of(tmp_path / "absent") is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = threading.Event()
    result: list[str | None] = []

    def read() -> None:
        result.append(md5_of(fifo))
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(5), "a FIFO planted in the cache made the agent hang"
    assert result == [None]
