"""Secrets sealed at rest: round trip, the reserved marker, and a task whose secret cannot be opened."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from cloud.access import Principal
from cloud.api import agent_calls as calls
from cloud.api.waiting import WaitingClaim
from cloud.db.engine import Database, migrate
from cloud.hub import Hub
from cloud.sealing import Sealer, Unsealable, load_sealer
from cloud.services import agents, runs, tasks
from cloud.services.errors import BadRequest
from cloud.services.transitions import TaskRow
from wire.agents import AgentRegister
from wire.credentials import TokenKind
from wire.tasks import TaskCreate

AGENT_A1 = Principal(kind=TokenKind.agent, name="a1", agent_id="a1")
"""Agent a1 with its own token: registering refreshes its row."""


def test_secret_values_are_sealed_and_come_back() -> None:
    sealer = Sealer([Fernet.generate_key()])
    # "!" is outside Fernet's base64 alphabet: a token cannot contain the secret by chance (as "pw" could).
    params = {"target": {"host": "db", "password": "pw!", "api_key": {"id": "x", "key": "y"}}, "n": [1, {"token": 7}]}
    sealed = sealer.seal(params)
    assert sealed["target"]["host"] == "db"
    assert set(sealed["target"]["password"]) == {"$sealed"} and "pw!" not in str(sealed)
    assert sealer.unseal(sealed) == params
    assert sealer.seal(sealed) == sealed  # sealing twice changes nothing


def test_another_key_cannot_unseal() -> None:
    sealed = Sealer([Fernet.generate_key()]).seal({"password": "pw"})
    with pytest.raises(Unsealable, match="sealed with another key"):
        Sealer([Fernet.generate_key()]).unseal(sealed)


def test_rotation_keeps_old_tasks_readable(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed = Sealer([old]).seal({"password": "pw"})
    rotated = load_sealer(tmp_path, SecretStr(f"{new.decode()},{old.decode()}"))
    assert rotated.unseal(sealed) == {"password": "pw"}


def test_generated_key_file_is_private_and_stable(tmp_path: Path) -> None:
    first = load_sealer(tmp_path, None).seal({"password": "pw"})
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert load_sealer(tmp_path, None).unseal(first) == {"password": "pw"}
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 't.db'}", Hub())
    migrate(database.engine)
    with database.transaction() as conn:
        agents.register_agent(conn, AgentRegister(agent_id="a1", hostname=os.uname().nodename, executors=[]), AGENT_A1)
    return database


def create(db: Database, sealer: Sealer, **body: object) -> str:
    with db.transaction() as conn:
        row, _ = tasks.create_task(
            conn, TaskCreate(agent_id="a1", **body), agents=agents.AgentCache(), offline_after=60, sealer=sealer
        )
    return str(row.id)


def test_the_marker_is_reserved_for_sealed_values(db: Database) -> None:
    with pytest.raises(BadRequest, match=r"params\.metadata\.note\.\$sealed: the key '\$sealed' is reserved"):
        create(
            db,
            Sealer([Fernet.generate_key()]),
            type="shell",
            command="true",
            params={"metadata": {"note": {"$sealed": 5}}},
        )


def test_a_task_that_cannot_be_unsealed_fails_alone(db: Database) -> None:
    before = Sealer([Fernet.generate_key()])
    bad = create(db, before, type="shell", command="true", env={"DB_PASSWORD": "pw"})
    good = create(db, before, type="shell", command="echo ok")
    after = Sealer([Fernet.generate_key()])  # the key changed, e.g. TIANGONG_SECRET_KEY set later
    rows: dict[int, TaskRow] = {}
    with db.transaction() as conn:
        got = runs.claim_tasks(conn, "a1", 10, 30, 1024, sealer=after, rows=rows)
    assert [a.id for a in got] == [f"task-{good}"]
    assert {n: r.status for n, r in rows.items()} == {int(bad): "failed", int(good): "running"}  # as left
    with db.transaction() as conn:
        row = tasks.get_task(conn, bad)
    assert row.status == "failed"
    assert row.error == "a secret in this task cannot be unsealed: it was sealed with another key (TIANGONG_SECRET_KEY)"


def test_a_task_that_fails_at_the_hand_out_to_a_waiting_claim_is_answered_failed(db: Database) -> None:
    """The create answers its task as the hand-out to the agent's waiting claim left it: here failed at once,
    so a sync caller does not wait for a wake-up that was published before it began to wait."""
    task = create(db, Sealer([Fernet.generate_key()]), type="shell", command="true", env={"DB_PASSWORD": "pw"})
    app: Any = SimpleNamespace(
        agents=agents.AgentCache(),
        settings=SimpleNamespace(lease_seconds=30, max_log_bytes=1024),
        sealer=Sealer([Fernet.generate_key()]),  # the key changed since
    )
    waiting = WaitingClaim(
        "a1", 1, "", recheck=lambda: Principal(kind=TokenKind.agent, name="a1", agent_id="a1"), job=cast(Any, None)
    )
    with db.transaction() as conn:
        row = calls.hand_to(app, conn, waiting, int(task))
    assert row is not None and row.status == "failed" and row.error.startswith("a secret in this task cannot")
    assert waiting.handed is None  # nothing went to the claim: it waits on
