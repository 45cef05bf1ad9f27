"""Reading a process's output in chunks: the lines of each read are logged together, and a line that
spans reads, ends without a newline, or passes CHUNK comes out as a line read one at a time would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from executors.process import CHUNK, _ProcessRun
from tests.unit.executors.harness import Harness, make_task
from wire.secrets import MASK
from wire.tasks import LogStream

SECRET = "s3cr3t-Value-42"


def feed(tmp_path: Path, *reads: str, stream: LogStream = LogStream.stdout) -> tuple[Harness, _ProcessRun]:
    """What the pump does with these reads of one pipe, then the end of the output."""

    async def main() -> tuple[Harness, _ProcessRun]:
        ctx = Harness(workdir=tmp_path, deadline=asyncio.get_running_loop().time() + 30)
        run = _ProcessRun(make_task("true", env={"API_TOKEN": SECRET}), ctx, grace=1.0)
        for text in reads:
            run._feed(text, stream, final=False)
        run._feed("", stream, final=True)
        for pipe in run.pipes.values():
            pipe.close()
        return ctx, run

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("reads", "lines"),
    [
        (["one\ntwo\n"], ["one", "two"]),
        (["on", "e\ntw", "o\n"], ["one", "two"]),  # lines cut by the reads
        (["one\ntwo"], ["one", "two"]),  # no final newline: the last line still comes
        (["one\n", "", "\n", "two"], ["one", "", "two"]),  # an empty line stays a line
        (["a\r\nb\r\n"], ["a\r", "b\r"]),  # CRLF: only the newline ends a line, as before
        (["x\x00y\n"], ["x\ufffdy"]),  # NUL replaced, as the cloud stores it
    ],
)
def test_lines_come_out_whole_however_the_reads_cut_them(tmp_path: Path, reads: list[str], lines: list[str]) -> None:
    ctx, run = feed(tmp_path, *reads)
    assert ctx.stream(LogStream.stdout) == lines
    assert run.result.text() == "".join(reads).replace("\x00", "\ufffd")


def test_a_secret_cut_by_two_reads_is_masked(tmp_path: Path) -> None:
    ctx, run = feed(tmp_path, f"token {SECRET[:5]}", f"{SECRET[5:]} ok\nnext\n")
    assert ctx.stream(LogStream.stdout) == [f"token {MASK} ok", "next"]
    assert SECRET not in run.result.text()


def test_a_line_longer_than_chunk_is_logged_in_pieces_across_reads(tmp_path: Path) -> None:
    half = "x" * (CHUNK // 2 + 10)
    ctx, _ = feed(tmp_path, half, half, "y\nz\n")
    pieces = ctx.stream(LogStream.stdout)
    assert all(len(p) <= CHUNK for p in pieces) and len(pieces) == 3
    assert "".join(pieces[:2]) == half + half + "y" and pieces[2] == "z"


def test_stderr_lines_of_a_read_feed_the_error_tail(tmp_path: Path) -> None:
    _, run = feed(tmp_path, "warn 1\n\n  \nfatal: gone\n", stream=LogStream.stderr)
    assert list(run.stderr_tail) == ["warn 1", "fatal: gone"]
