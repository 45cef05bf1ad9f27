"""Log runs: a task_logs row holds `lines` consecutive lines (the id and seq of its first line).

A row per line cost ~10 us to insert on SQLite and ~100 bytes of row and indexes over the text. The
lines of a run keep one global id each: `id + i`. SQLite reserves them densely (sqlite_sequence);
PostgreSQL's sequence steps by LOG_ID_BLOCK, so every row owns that many ids for its lines.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOG_ID_BLOCK = 16384
"""Ids a row owns on PostgreSQL (cloud.services.logs.LOG_ID_BLOCK): more than a run may hold."""


def upgrade() -> None:
    with op.batch_alter_table("task_logs") as batch:
        batch.add_column(sa.Column("lines", sa.Integer(), nullable=False, server_default="1"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER SEQUENCE task_logs_id_seq INCREMENT BY {LOG_ID_BLOCK}")


def downgrade() -> None:
    runs = op.get_bind().exec_driver_sql("SELECT count(*) FROM task_logs WHERE lines > 1").scalar()
    if runs:
        raise RuntimeError(f"task_logs holds {runs} rows of several lines, which the older schema cannot hold")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER SEQUENCE task_logs_id_seq INCREMENT BY 1")
    with op.batch_alter_table("task_logs") as batch:
        batch.drop_column("lines")
