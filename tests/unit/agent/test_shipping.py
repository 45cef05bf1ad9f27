"""Shipping logs and results: live batches, the result with the lines the cloud lacks, and every resend
following the cloud's `next_seq` (from memory or from the outbox journal)."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import cast

import pytest

from agent.client import CloudClient, Rejected
from agent.outbox import Entry, Outbox
from agent.shipping import (
    Deliveries,
    Item,
    LinesLost,
    LogShipper,
    Pending,
    as_runs,
    deliver,
    journal_slice,
    send_batch,
    split_runs,
)
from tests.unit.agent.harness import FakeCloud, assignment, lines, until
from wire.tasks import MAX_BATCH_LINES, LogLine, LogStream, TaskReport, TaskStatus

TOKEN = "tok-7"


def client(cloud: FakeCloud) -> CloudClient:
    return cast(CloudClient, cloud)


def stored(tmp_path: Path, n: int, *, status: TaskStatus = TaskStatus.success) -> tuple[Entry, list[LogLine]]:
    """An outbox entry as a finished attempt leaves it: `n` journaled lines and its result."""
    entry, journal = Outbox(tmp_path / "outbox").create(assignment())
    logged = lines(n)
    for ln in logged:
        journal.line(ln)
    assert journal.finish(TaskReport(task_token=TOKEN, status=status, log_lines=n))
    return entry, logged


def pending(entry: Entry, logged: list[LogLine], unsent: list[LogLine]) -> Pending:
    report = entry.read().result
    assert report is not None
    return Pending(entry, report, unsent, functools.partial(journal_slice, logged, report.log_lines))


def test_journal_slice_gives_lines_only_when_all_are_there() -> None:
    assert journal_slice(lines(3), 3, 2) == lines(3)[1:]
    assert journal_slice(lines(3), 3, 4) == []
    assert journal_slice(lines(3), 3, 5) is None and journal_slice(lines(3), 3, 0) is None
    assert journal_slice(lines(2), 3, 1) is None  # a failed disk lost the last one


def test_send_batch_resends_from_the_next_seq_a_gap_names() -> None:
    cloud = FakeCloud(held=lines(2))
    everything = lines(6)
    source = functools.partial(journal_slice, everything, 6)
    # The cloud holds 1-2: a batch from 4 is a gap, and the answer is what to send instead.
    assert asyncio.run(send_batch(client(cloud), "task-7", TOKEN, everything[3:], source)) == everything[2:]
    assert asyncio.run(send_batch(client(cloud), "task-7", TOKEN, everything[2:], source)) == []
    assert [ln.seq for ln in cloud.held] == [1, 2, 3, 4, 5, 6]


def test_send_batch_raises_when_the_lines_asked_for_are_gone() -> None:
    cloud = FakeCloud()
    with pytest.raises(LinesLost):
        asyncio.run(send_batch(client(cloud), "task-7", TOKEN, lines(2, first=3), lambda seq: None))


def test_send_batch_passes_a_refusal_without_resend_on() -> None:
    cloud = FakeCloud(refuse=Rejected(409, "stale task_token"))
    with pytest.raises(Rejected, match="stale"):
        asyncio.run(send_batch(client(cloud), "task-7", TOKEN, lines(1), lambda seq: []))


def test_short_log_rides_with_the_result_and_the_entry_goes(tmp_path: Path) -> None:
    entry, logged = stored(tmp_path, 3)
    cloud = FakeCloud()
    assert asyncio.run(deliver(client(cloud), pending(entry, logged, logged), batch_lines=10))
    assert cloud.batches == [[1, 2, 3]] and cloud.held == logged
    assert [r.status for r in cloud.results] == [TaskStatus.success]
    assert not entry.journal_path.exists()


def test_result_refused_for_missing_lines_resends_them_from_the_journal(tmp_path: Path) -> None:
    entry, logged = stored(tmp_path, 5)
    cloud = FakeCloud(held=logged[:2])  # what live batches got through before a crash
    assert asyncio.run(deliver(client(cloud), pending(entry, logged, []), batch_lines=10))
    assert cloud.batches == [[], [3, 4, 5]]  # no lines up front: the 409 says where to start
    assert cloud.held == logged and len(cloud.results) == 1


def test_a_long_tail_goes_ahead_in_batches_and_a_lost_batch_is_resent(tmp_path: Path) -> None:
    entry, logged = stored(tmp_path, 7)
    cloud = FakeCloud(forget_next=1)  # the first batch is acknowledged, then lost
    assert asyncio.run(deliver(client(cloud), pending(entry, logged, logged), batch_lines=3))
    assert cloud.batches == [[1, 2, 3], [4, 5, 6], [1, 2, 3], [4, 5, 6], [7]]
    assert cloud.held == logged and len(cloud.results) == 1


def test_a_cloud_out_of_reach_is_waited_for(tmp_path: Path) -> None:
    entry, logged = stored(tmp_path, 1)
    cloud = FakeCloud(unavailable=2)
    assert asyncio.run(deliver(client(cloud), pending(entry, logged, logged), batch_lines=10))
    assert len(cloud.results) == 1


@pytest.mark.parametrize(("status", "kept"), [(409, False), (404, False), (401, True), (429, True)])
def test_a_refusal_drops_the_result_unless_it_may_pass(tmp_path: Path, status: int, kept: bool) -> None:
    entry, logged = stored(tmp_path, 1)
    cloud = FakeCloud(refuse=Rejected(status, "no"))
    assert asyncio.run(deliver(client(cloud), pending(entry, logged, logged), batch_lines=10)) is not kept
    assert entry.journal_path.exists() is kept


def test_a_result_whose_lines_are_lost_is_dropped(tmp_path: Path) -> None:
    entry, _ = stored(tmp_path, 3)
    cloud = FakeCloud()
    item = Pending(entry, TaskReport(task_token=TOKEN, status=TaskStatus.success, log_lines=3), [], lambda seq: None)
    assert asyncio.run(deliver(client(cloud), item, batch_lines=10))
    assert cloud.results == [] and not entry.journal_path.exists()


def test_live_lines_ship_in_batches_of_batch_lines(tmp_path: Path) -> None:
    async def scenario() -> tuple[FakeCloud, LogShipper]:
        cloud = FakeCloud()
        entry, journal = Outbox(tmp_path / "outbox").create(assignment())
        shipper = LogShipper(client(cloud), assignment(), 0.01, 2, entry, journal)
        for i in range(1, 6):
            shipper.add(f"line {i}", LogStream.stdout, None)
        await until(lambda: len(cloud.held) == 5)
        await shipper.close()
        journal.close()
        return cloud, shipper

    cloud, shipper = asyncio.run(scenario())
    assert [ln.message for ln in cloud.held] == [f"line {i}" for i in range(1, 6)]
    assert cloud.batches == [[1, 2], [3, 4], [5]] and shipper.unsent() == [] and shipper.total == 5


def test_live_resend_reads_lines_memory_no_longer_holds_from_the_journal(tmp_path: Path) -> None:
    async def scenario() -> tuple[FakeCloud, list[LogLine] | None]:
        cloud = FakeCloud()
        entry, journal = Outbox(tmp_path / "outbox").create(assignment())
        shipper = LogShipper(client(cloud), assignment(), 0.01, 100, entry, journal)
        for i in range(1, 4):
            shipper.add(f"line {i}", LogStream.stdout, None)
        await until(lambda: len(cloud.held) == 3 and shipper.unsent() == [])  # acknowledged: gone from memory
        del cloud.held[1:]  # lost in a cloud crash after it acknowledged them: it asks for 2 on
        shipper.add("line 4", LogStream.stdout, None)
        await until(lambda: len(cloud.held) == 4)
        await shipper.close()
        journal.close()
        return cloud, shipper.lines_from(1)

    cloud, from_journal = asyncio.run(scenario())
    assert [ln.message for ln in cloud.held] == ["line 1", "line 2", "line 3", "line 4"]
    assert from_journal is not None and [ln.seq for ln in from_journal] == [1, 2, 3, 4]


def test_a_refused_batch_stops_live_shipping(tmp_path: Path) -> None:
    async def scenario() -> tuple[FakeCloud, LogShipper]:
        cloud = FakeCloud(refuse=Rejected(409, "stale task_token"))
        entry, journal = Outbox(tmp_path / "outbox").create(assignment())
        shipper = LogShipper(client(cloud), assignment(), 0.01, 1, entry, journal)
        shipper.add("one", LogStream.stdout, None)
        await asyncio.sleep(0.1)
        shipper.add("two", LogStream.stdout, None)
        await shipper.close()
        journal.close()
        return cloud, shipper

    cloud, shipper = asyncio.run(scenario())
    assert cloud.calls == 1  # "one" was refused; "two" was never offered
    assert [m for ln in shipper.unsent() for m in ln.messages()] == ["one", "two"]  # they stay for the report


def test_deliveries_list_their_tokens_and_keep_what_is_unsent_at_settle(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[str, str], FakeCloud, Entry]:
        entry, logged = stored(tmp_path, 1)
        cloud = FakeCloud(unavailable=10**6)
        deliveries = Deliveries(client(cloud), 10)
        deliveries.send(pending(entry, logged, logged))
        tokens = deliveries.tokens()
        await deliveries.settle(0.05)
        assert deliveries.tokens() == {}
        return tokens, cloud, entry

    tokens, cloud, entry = asyncio.run(scenario())
    assert tokens == {"task-7": TOKEN}
    assert cloud.results == [] and entry.journal_path.exists()  # for the next start


def test_live_batches_are_cut_by_size_as_well_as_by_line_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.shipping.BATCH_CHARS", 12)  # two 6-character lines per batch

    async def scenario() -> FakeCloud:
        cloud = FakeCloud()
        entry, journal = Outbox(tmp_path / "outbox").create(assignment())
        shipper = LogShipper(client(cloud), assignment(), 0.01, 100, entry, journal)
        for i in range(1, 6):
            shipper.add(f"line {i}", LogStream.stdout, None)
        await until(lambda: len(cloud.held) == 5)
        await shipper.close()
        journal.close()
        return cloud

    cloud = asyncio.run(scenario())
    assert cloud.batches == [[1, 2], [3, 4], [5]]


def test_lines_still_in_the_journal_buffer_are_read_back_for_a_resend(tmp_path: Path) -> None:
    """Lines are journaled without a flush each; a resend from the journal must still see all of them."""

    async def scenario() -> list[LogLine] | None:
        cloud = FakeCloud()
        entry, journal = Outbox(tmp_path / "outbox").create(assignment())
        shipper = LogShipper(client(cloud), assignment(), 0.2, 100, entry, journal)
        for i in range(1, 4):
            shipper.add(f"line {i}", LogStream.stdout, None)
        await until(lambda: len(cloud.held) == 3 and shipper.unsent() == [])
        shipper.add("line 4", LogStream.stdout, None)  # not shipped yet: in the journal's buffer only
        found = shipper.lines_from(2)
        await shipper.close()
        journal.close()
        return found

    found = asyncio.run(scenario())
    assert found is not None and [ln.message for ln in found] == ["line 2", "line 3", "line 4"]


def test_closing_a_waiting_shipper_ends_it_at_once(tmp_path: Path) -> None:
    """A task that printed nothing (or whose lines are all sent) ends: the close must not wait out the
    flush interval. It once did, holding every short task's result back by log_flush_seconds."""

    async def scenario() -> float:
        entry, journal = Outbox(tmp_path / "outbox").create(assignment())
        shipper = LogShipper(client(FakeCloud()), assignment(), 30.0, 100, entry, journal)
        await asyncio.sleep(0)  # the shipper now waits for a line
        started = time.monotonic()
        await asyncio.wait_for(shipper.close(), 10)  # 30 s of flush interval would time out here
        journal.close()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 10


def test_a_backlog_longer_than_a_batch_leaves_as_runs_a_request_may_carry() -> None:
    """25,000 lines left unsent when a task ends (it printed faster than the cloud took them): runs of at
    most MAX_BATCH_LINES, contiguous; a single run of them all once failed validation and lost the attempt."""
    items: list[Item] = [(LogStream.stdout, None, str(i)) for i in range(1, 25_001)]
    runs = as_runs(1, items)
    assert [ln.count for ln in runs] == [MAX_BATCH_LINES, MAX_BATCH_LINES, 5_000]
    assert [m for ln in runs for m in ln.messages()] == [str(i) for i in range(1, 25_001)]
    assert [ln.seq for ln in runs] == [1, 10_001, 20_001]


def test_a_run_is_cut_where_a_batch_reaches_its_size() -> None:
    lines = [LogLine(seq=1, message="aaaa", more=["bbbb", "cccc", "dddd"]), LogLine(seq=5, message="e")]
    batch, rest = split_runs(lines, max_lines=100, max_chars=10)
    assert [(ln.seq, ln.messages()) for ln in batch] == [(1, ["aaaa", "bbbb"])]
    assert [(ln.seq, ln.messages()) for ln in rest] == [(3, ["cccc", "dddd"]), (5, ["e"])]
    batch, rest = split_runs(lines, max_lines=3, max_chars=1 << 20)
    assert [ln.messages() for ln in batch] == [["aaaa", "bbbb", "cccc"]] and rest[0].seq == 4
    assert split_runs(lines, 100, 1 << 20) == (lines, [])
    assert split_runs([LogLine(seq=1, message="x" * 50)], 100, 10)[0][0].message == "x" * 50  # at least one line


def test_a_long_run_in_the_result_goes_ahead_in_batches(tmp_path: Path) -> None:
    entry, logged = stored(tmp_path, 7)
    run = [LogLine(seq=1, message=logged[0].message, more=[ln.message for ln in logged[1:]])]
    cloud = FakeCloud()
    assert asyncio.run(deliver(client(cloud), pending(entry, logged, run), batch_lines=3))
    assert cloud.batches == [[1, 2, 3], [4, 5, 6], [7]]
    assert cloud.held == logged and len(cloud.results) == 1
