"""Tasks for the service tests' agent `a1` (tests/unit/cloud/conftest.py), made through the services."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet

from cloud.db.engine import Database
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache
from cloud.services.runs import claim_tasks
from cloud.services.tasks import create_task
from wire.tasks import Assignment, TaskCreate

SEALER = Sealer([Fernet.generate_key()])
"""The sealer every helper here seals and unseals with: a test module that seals too uses this one."""


def queue_shell(db: Database, **fields: Any) -> None:
    """A new pending `shell` task (`true`) for agent a1, with `fields` of TaskCreate."""
    with db.transaction() as conn:
        req = TaskCreate(agent_id="a1", type="shell", command="true", **fields)
        create_task(conn, req, agents=AgentCache(), offline_after=60, sealer=SEALER)


def claim_one(db: Database) -> Assignment:
    """Agent a1's claim of exactly one task."""
    with db.transaction() as conn:
        [task] = claim_tasks(conn, "a1", 1, lease_seconds=30, max_log_bytes=1 << 20, sealer=SEALER)
    return task
