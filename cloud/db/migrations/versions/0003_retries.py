"""Retries and delivery expiry: the retry policy of a task, retries used, and when a pending task expires.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_backoff", sa.Float(), nullable=False, server_default="5"))
        batch.add_column(sa.Column("retry_on", sa.String(8), nullable=False, server_default="lost"))
        batch.add_column(sa.Column("expires_in", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
    # The background passes look for due retries and expired deliveries among pending tasks.
    op.create_index("ix_tasks_status_retry", "tasks", ["status", "next_retry_at"])
    op.create_index("ix_tasks_status_expires", "tasks", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_status_expires", table_name="tasks")
    op.drop_index("ix_tasks_status_retry", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        for column in ("expires_at", "expires_in", "retry_on", "retry_backoff", "retries"):
            batch.drop_column(column)
