"""The cloud's own masking of agent output: the masker of an attempt comes from its claim, or (on another
replica, or after the cloud restarted) from the task's sealed params and env, on SQLite and PostgreSQL."""

from __future__ import annotations

from cryptography.fernet import Fernet

from cloud.db.engine import Database
from cloud.sealing import Sealer
from cloud.services import output
from cloud.services.agents import AgentCache
from cloud.services.runs import claim_tasks
from cloud.services.tasks import create_task
from wire.secrets import MASK
from wire.tasks import Assignment, LogLine, TaskCreate, TaskReport, TaskStatus

SEALER = Sealer([Fernet.generate_key()])
PASSWORD = "Sealed-pw-993"


def claimed(db: Database) -> Assignment:
    req = TaskCreate(agent_id="a1", type="shell", command="echo --token=Cmd-tok-77", params={"password": PASSWORD})
    with db.transaction() as conn:
        create_task(conn, req, agents=AgentCache(), offline_after=60, sealer=SEALER)
    with db.transaction() as conn:
        [task] = claim_tasks(conn, "a1", 1, lease_seconds=30, max_log_bytes=1 << 20, sealer=SEALER)
    return task


def test_the_masker_is_rebuilt_from_the_sealed_task_when_not_kept(db: Database) -> None:
    task = claimed(db)
    kept = output.kept_masker(task.task_token)
    assert kept is not None and PASSWORD in kept.secrets
    output.forget(task.task_token)  # as on a replica that did not hand the task out
    assert output.kept_masker(task.task_token) is None
    with db.transaction() as conn:
        masker = output.masker_for(conn, task.id, task.task_token, SEALER)
        stale = output.masker_for(conn, task.id, "not-the-token", SEALER)
    assert {PASSWORD, "Cmd-tok-77"} <= set(masker.secrets)
    assert stale.secrets == ()
    lines = output.clean_lines([LogLine(seq=1, message=f"{PASSWORD} Cmd-tok-77\x00")], masker)
    assert lines[0].message == f"{MASK} {MASK}\ufffd"


def test_a_report_is_masked_before_it_is_cut() -> None:
    masker = output.Masker.of([PASSWORD])
    # The secret straddles where the cut falls (byte 100): masked first, no part of it survives the cut.
    result = "a" * 98 + PASSWORD + "b" * 5000
    report = TaskReport(task_token="t", status=TaskStatus.success, result=result, error="x" * 100_000)
    cleaned = output.clean_report(report, masker, max_log_bytes=200)
    assert cleaned.result.startswith("a" * 98 + "**\n[tiangong: ")
    assert cleaned.result.endswith("]\n" + "b" * 100)
    assert len(cleaned.error) < output.ERROR_MAX_BYTES + 200
