"""Fleet runs (issue 20 item 3): a child task's parent_id, a parent's fleet settings, one child per agent.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("parent_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("fleet", sa.JSON(), nullable=True))
    # A parent's children, and the guard that one target is never started twice (NULLs do not collide).
    op.create_index("ix_tasks_parent_agent", "tasks", ["parent_id", "agent_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_tasks_parent_agent", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("fleet")
        batch.drop_column("parent_id")
