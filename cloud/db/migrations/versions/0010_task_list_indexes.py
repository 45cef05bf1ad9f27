"""Indexes for the task list with a million tasks: newest first overall and by agent, status and type; the
retention pass reads the oldest first from the same index. The claim's (agent_id, status) index grows
into (agent_id, status, type, created_at, id), so a list by agent and status (and type) reads one index,
its count included.

Building them reads the whole tasks table once (about a second per 100,000 tasks here); writes to the
table wait meanwhile.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_tasks_created": ["created_at", "id"],
    "ix_tasks_agent_created": ["agent_id", "created_at", "id"],
    "ix_tasks_status_created": ["status", "created_at", "id"],
    "ix_tasks_type_created": ["type", "created_at", "id"],
}


def upgrade() -> None:
    # The new one first: claims never go without an index on agent_id and status.
    op.create_index("ix_tasks_agent_status_type", "tasks", ["agent_id", "status", "type", "created_at", "id"])
    op.drop_index("ix_tasks_agent_status", table_name="tasks")
    for name, columns in INDEXES.items():
        op.create_index(name, "tasks", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="tasks")
    op.create_index("ix_tasks_agent_status", "tasks", ["agent_id", "status"])
    op.drop_index("ix_tasks_agent_status_type", table_name="tasks")
