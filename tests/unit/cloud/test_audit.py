"""The audit log: filtered newest first, and records past the retention deleted by the background pass."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from cloud.access import ADMIN, Principal
from cloud.background import run_pass
from cloud.db.engine import Database
from cloud.db.models import AUDIT
from cloud.db.types import CLOCK, utcnow
from cloud.services import audit
from wire.credentials import TokenKind

CI = Principal(kind=TokenKind.api, name="ci", credential_id=3)


def test_records_filter_by_actor_and_action_family(db: Database) -> None:
    with db.transaction() as conn:
        audit.record(conn, CI, "task.create", "task-1", agent_id="web-1", type="shell")
        audit.record(conn, CI, "task.cancel", "task-1")
        audit.record(conn, ADMIN, "token.create", "token-3", kind="api", name="ci")
    with db.transaction() as conn:
        items, total = audit.list_audit(conn, 1, 10, actor="ci", action="task")
        assert total == 2 and [i.action for i in items] == ["task.cancel", "task.create"]
        assert items[1].detail == {"agent_id": "web-1", "type": "shell", "token": "token-3"}
        items, total = audit.list_audit(conn, 1, 10, action="token.create")
        assert total == 1 and items[0].actor == "admin" and items[0].target == "token-3"
        assert audit.list_audit(conn, 1, 10, action="tas")[1] == 0  # a family is a whole dotted prefix


def test_the_background_pass_deletes_records_older_than_the_retention(db: Database) -> None:
    with db.transaction() as conn:
        audit.record(conn, ADMIN, "agent.delete", "old-agent")
        audit.record(conn, ADMIN, "agent.delete", "new-agent")
        conn.execute(update(AUDIT).where(AUDIT.c.target == "old-agent").values(at=utcnow() - timedelta(days=31)))
    offset = CLOCK.offset
    try:
        run_pass(db, 1.0, audit_days=30)
    finally:
        CLOCK.offset = offset  # the pass measured PostgreSQL's clock: other tests expect this process's
    with db.transaction() as conn:
        items, total = audit.list_audit(conn, 1, 10, action="agent.delete")
    assert total == 1 and items[0].target == "new-agent"
