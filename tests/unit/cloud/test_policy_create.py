"""The cloud's command policy at creation, on SQLite and PostgreSQL: a refused command is Forbidden naming
the rule and nothing is stored; the policy comes from TIANGONG_POLICY_* settings."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError
from sqlalchemy import func, select

from cloud.db.engine import Database
from cloud.db.models import TASKS
from cloud.policy import cloud_policy
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache
from cloud.services.errors import Forbidden
from cloud.services.tasks import create_task
from cloud.settings import CloudSettings
from executors.policy import CommandPolicy
from wire.tasks import TaskCreate

SEALER = Sealer([Fernet.generate_key()])


def create(db: Database, command: str, policy: CommandPolicy | None, **fields: object) -> None:
    req = TaskCreate.model_validate({"agent_id": "a1", "type": "shell", "command": command, **fields})
    with db.transaction() as conn:
        create_task(conn, req, agents=AgentCache(), offline_after=60, sealer=SEALER, policy=policy)


def stored(db: Database) -> int:
    with db.transaction() as conn:
        return int(conn.execute(select(func.count()).select_from(TASKS)).scalar_one())


def test_a_refused_command_is_forbidden_naming_the_rule_and_not_stored(db: Database) -> None:
    with pytest.raises(Forbidden) as info:
        create(db, "cd /tmp && sudo id", CommandPolicy(), request_id="r-1")
    assert info.value.status_code == 403
    assert info.value.extra == {"rule": "sudo"}
    assert "policy rule 'sudo'" in info.value.message
    assert stored(db) == 0
    create(db, "rm -rf /tmp/x", CommandPolicy())
    assert stored(db) == 1


def test_no_policy_checks_nothing(db: Database) -> None:
    create(db, "sudo id", None)
    assert stored(db) == 1


def test_the_policy_comes_from_the_settings(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIANGONG_POLICY_DENY", '["no-curl=\\\\bcurl\\\\b"]')
    monkeypatch.setenv("TIANGONG_POLICY_REFUSE_TYPES", '["python"]')
    policy = cloud_policy(CloudSettings())
    with pytest.raises(Forbidden) as info:
        create(db, "curl -s http://example.com", policy)
    assert info.value.extra == {"rule": "no-curl"}
    with pytest.raises(Forbidden) as info:
        create(db, "print(1)", policy, type="python")
    assert info.value.extra == {"rule": "refuse_types"}
    off = cloud_policy(CloudSettings(policy_mode="off"))
    create(db, "sudo id", off)
    assert stored(db) == 1


def test_a_bad_rule_in_the_settings_stops_the_cloud_naming_it() -> None:
    with pytest.raises(ValidationError, match="policy deny rule 'broken': invalid regex"):
        CloudSettings(policy_deny=["broken=(("])
    with pytest.raises(ValidationError, match="unknown task type 'pyhton'"):
        CloudSettings(policy_refuse_types=["pyhton"])
    with pytest.raises(ValidationError, match="policy_mode"):
        CloudSettings(policy_mode="strict")
