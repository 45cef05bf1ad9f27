"""One attempt on the agent: a real shell process under its deadline and cancel, its output captured and
masked, its result stored in the outbox before anything ships, and an abandoned one left for recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from agent.client import CloudClient
from agent.config import AgentConfig
from agent.files import FileCache
from agent.ledger import StartedLedger
from agent.outbox import Outbox
from agent.recovery import RESTARTED, recover
from agent.runner import Attempt, Shared
from agent.shipping import Pending, deliver
from tests.unit.agent.harness import FakeCloud, assignment, until
from wire.tasks import POLICY_REFUSED, Assignment, LogStream, TaskStatus


def shared(tmp_path: Path, cloud: FakeCloud) -> Shared:
    client = cast(CloudClient, cloud)
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return Shared(
        client=client,
        outbox=Outbox(tmp_path / "outbox"),
        files=FileCache(client, tmp_path / "cache"),
        workdir=workdir,
        config=AgentConfig(),
        log_flush_seconds=0.01,
        log_batch_lines=100,
    )


def run(tmp_path: Path, task: Assignment, cancel_after: float | None = None) -> tuple[Attempt, Pending, FakeCloud]:
    """Run one attempt to its end, then deliver its result to a fake cloud."""
    cloud = FakeCloud()

    async def scenario() -> tuple[Attempt, Pending]:
        attempt = Attempt(task, shared(tmp_path, cloud))
        if cancel_after is not None:
            asyncio.get_running_loop().call_later(cancel_after, attempt.cancel, "canceled by request")
        item = await attempt.run()
        assert item.entry.read().result == item.report  # stored before the first send
        assert await deliver(cast(CloudClient, cloud), item, 100)
        return attempt, item

    attempt, item = asyncio.run(scenario())
    return attempt, item, cloud


def test_an_attempt_captures_masks_stores_and_ships(tmp_path: Path) -> None:
    task = assignment(command="echo out; echo pw=s3cret; echo err >&2; exit 3")
    _attempt, item, cloud = run(tmp_path, task)
    report = cloud.results[0]
    assert (report.status, report.exit_code, report.task_token) == (TaskStatus.failed, 3, "tok-7")
    assert "s3cret" not in report.model_dump_json() and "pw=******" in report.result
    shipped = [(ln.stream, ln.message) for ln in cloud.held]
    assert (LogStream.stdout, "pw=******") in shipped and (LogStream.stderr, "err") in shipped
    assert report.log_lines == len(cloud.held) == item.report.log_lines
    assert [ln.seq for ln in cloud.held] == list(range(1, len(cloud.held) + 1))
    assert not item.entry.journal_path.exists()  # delivered: the outbox forgets it


def test_a_cancel_ends_the_attempt_with_its_reason(tmp_path: Path) -> None:
    _attempt, item, _cloud = run(tmp_path, assignment(command="sleep 30"), cancel_after=0.3)
    assert item.report.status is TaskStatus.canceled and item.report.error == "canceled by request"


def test_the_deadline_ends_the_attempt(tmp_path: Path) -> None:
    _attempt, item, _cloud = run(tmp_path, assignment(command="sleep 30", exec_timeout=1))
    assert item.report.status is TaskStatus.timeout


def test_the_agent_policy_refuses_before_anything_runs(tmp_path: Path) -> None:
    _attempt, item, cloud = run(tmp_path, assignment(command="sudo rm -rf / && touch ran"))
    assert item.report.status is TaskStatus.failed and item.report.error.startswith(POLICY_REFUSED)
    assert cloud.held[-1].stream is LogStream.system and cloud.held[-1].message.startswith(POLICY_REFUSED)
    assert not (tmp_path / "work" / "ran").exists()


def test_an_unknown_type_fails_the_attempt_not_the_agent(tmp_path: Path) -> None:
    _attempt, item, _cloud = run(tmp_path, assignment(type="no-such-type"))
    assert item.report.status is TaskStatus.failed and "no-such-type" in item.report.error


def test_an_abandoned_attempt_stores_no_result_and_recovery_reports_it(tmp_path: Path) -> None:
    cloud = FakeCloud()

    async def scenario() -> Attempt:
        attempt = Attempt(assignment(command="echo started; sleep 30"), shared(tmp_path, cloud))
        job = asyncio.create_task(attempt.run())
        await until(lambda: bool(cloud.held))  # running, and its first line shipped live
        job.cancel()  # what the drain does to an attempt that ignores its cancel
        await asyncio.gather(job, return_exceptions=True)
        # The executor kills its group as it unwinds; keep the loop until the leader is reaped.
        [leader] = attempt.entry.read().processes
        await until(lambda: not Path(f"/proc/{leader.pid}").exists())
        return attempt

    attempt = asyncio.run(scenario())
    assert attempt.entry.read().result is None
    ledger = StartedLedger(tmp_path / "started")
    try:
        [item] = recover(Outbox(tmp_path / "outbox"), ledger)
    finally:
        ledger.close()
    assert item.report.status is TaskStatus.failed and item.report.error == RESTARTED
    assert (lines := item.lines_from(1)) is not None and lines[0].message == "started"
    assert lines[-1].message.startswith(RESTARTED)
