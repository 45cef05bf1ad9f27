"""Tables: tasks, their log lines, agents, files, credentials, the audit log and schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, Table, Text, UniqueConstraint, false, text
from sqlmodel import Field, SQLModel

from cloud.db.types import UTCDateTime, utcnow

# SQLite only autoincrements an INTEGER PRIMARY KEY; BigInteger elsewhere keeps room on PostgreSQL.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def _when_set(column: str) -> dict[str, Any]:
    """An index's options that keep in it only the rows whose `column` is not NULL (migration 0012)."""
    where = text(f"{column} IS NOT NULL")
    return {"sqlite_where": where, "postgresql_where": where}


class Task(SQLModel, table=True):
    """One task and its current attempt. Every status change is a compare-and-set UPDATE."""

    __tablename__ = "tasks"
    __table_args__ = (
        # A claim (an agent's pending tasks), and the task list by agent and status (and type), newest
        # first; its count reads this index alone.
        Index("ix_tasks_agent_status_type", "agent_id", "status", "type", "created_at", "id"),
        Index("ix_tasks_file_id", "file_id"),
        # Lapsed leases, due retries, expired deliveries: each holds only the tasks whose time is set (a
        # stretch of a task's life), so a status change does not move an entry no query of it can return.
        Index("ix_tasks_status_lease", "status", "lease_expires_at", **_when_set("lease_expires_at")),
        Index("ix_tasks_status_retry", "status", "next_retry_at", **_when_set("next_retry_at")),
        Index("ix_tasks_status_expires", "status", "expires_at", **_when_set("expires_at")),
        # Fleet runs: a parent's children, one per agent (a second launch of a target cannot be stored).
        # Children only: the default list's `parent_id IS NULL` must not read every task through it.
        Index(
            "ix_tasks_parent_agent",
            "parent_id",
            "agent_id",
            unique=True,
            sqlite_where=text("parent_id IS NOT NULL"),
            postgresql_where=text("parent_id IS NOT NULL"),
        ),
        # The task list, newest first, by each of its filters (and retention, oldest first).
        Index("ix_tasks_created", "created_at", "id"),
        Index("ix_tasks_agent_created", "agent_id", "created_at", "id"),
        Index("ix_tasks_status_created", "status", "created_at", "id"),
        Index("ix_tasks_type_created", "type", "created_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    agent_id: str = Field(max_length=128)
    type: str = Field(max_length=64)
    status: str = Field(default="pending", max_length=16)
    command: str = Field(default="", sa_type=Text)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    env: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    file_id: str = Field(default="", max_length=64)
    exec_timeout: int = 1800
    result: str = Field(default="", sa_type=Text)
    data: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    exit_code: int | None = None
    error: str = Field(default="", sa_type=Text)
    attempts: int = 0
    max_retries: int = 0
    retries: int = 0
    retry_backoff: float = 5.0
    retry_on: str = Field(default="lost", max_length=8)
    next_retry_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str = Field(default="", sa_type=Text)
    # Delivery: a pending task no agent claims by expires_at fails `not delivered` (or is retried).
    expires_in: int | None = None
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    request_id: str | None = Field(default=None, max_length=200, unique=True)
    # SHA-256 of the creating request (sealed values left out), so a reused request_id with another body
    # is refused; NULL for tasks created before revision 0004, which match any body.
    request_fingerprint: str | None = Field(default=None, max_length=64)
    cron_source: str | None = Field(default=None, max_length=200)
    # The current attempt: its fencing token, lease, and the next log seq the cloud expects.
    task_token: str | None = Field(default=None, max_length=64)
    claimed_by: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_seq: int = 1
    # Bytes of log the current attempt has stored: past max_log_bytes its further lines are dropped.
    log_bytes: int = Field(default=0, sa_type=BigInteger)
    cancel_requested: bool = False
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Fleet runs (docs/fleet.md): a child names its parent; a parent holds its selector, limits and
    # targets (wire.fleet), and its `attempts` counts the children started (the launch compare-and-set).
    parent_id: int | None = Field(default=None, sa_type=BigInteger)
    fleet: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class LogEntry(SQLModel, table=True):
    """A run of `lines` consecutive output lines of one attempt, stream, level and time (one line when
    `lines` is 1; else `message` holds them joined by newlines, and none of them holds a newline itself).

    Line i of the run (from 0) has seq `seq + i` and the global id `id + i`: the cursor callers page and
    resume with. A row per line cost more to insert, and to keep, than the text itself.
    """

    __tablename__ = "task_logs"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt", "seq", name="uq_task_logs_task_attempt_seq"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    task_id: int = Field(sa_type=BigInteger, index=True)
    attempt: int = 1
    seq: int
    stream: str = Field(default="stdout", max_length=8)
    level: str = Field(default="info", max_length=8)
    message: str = Field(sa_type=Text)
    timestamp: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    lines: int = Field(default=1, sa_column_kwargs={"server_default": "1"})


class Agent(SQLModel, table=True):
    """An agent id; several processes may serve it, and it is online while any of them is heard from."""

    __tablename__ = "agents"

    id: str = Field(primary_key=True, max_length=128)
    hostname: str = Field(default="", max_length=255)
    labels: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    version: str = Field(default="", max_length=64)
    executors: list[str] = Field(default_factory=list, sa_type=JSON)
    max_concurrency: int = 1
    # A disabled agent is handed no task and accepts no new one; what runs finishes.
    disabled: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    last_seen_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    registered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StoredFile(SQLModel, table=True):
    """An uploaded file; its content lives once per MD5 in the file store."""

    __tablename__ = "files"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    name: str = Field(max_length=255, index=True)
    size: int = Field(sa_type=BigInteger)
    content_type: str = Field(max_length=255)
    md5: str = Field(max_length=32, unique=True)
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Credential(SQLModel, table=True):
    """A bearer token: `api` (tgp_, a caller with a scope), `registration` (tgr_, lets agents register) or
    `agent` (tga_, bound to one agent id). Only the SHA-256 of the token is kept."""

    __tablename__ = "credentials"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    kind: str = Field(max_length=16)
    name: str = Field(max_length=128)
    token_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=16)
    agent_id: str | None = Field(default=None, max_length=128, index=True)
    scope: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    single_use: bool = False
    uses: int = 0
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = Field(default="", max_length=128)


class AuditEntry(SQLModel, table=True):
    """Who did what and when: task, token and agent changes; kept audit_retention_days."""

    __tablename__ = "audit_log"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=32)
    target: str = Field(default="", max_length=200)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Schedule(SQLModel, table=True):
    """A cron expression and the task each firing creates. A firing moves `next_run_at` on by a
    compare-and-set in the transaction that inserts the task, so it happens once across replicas."""

    __tablename__ = "schedules"
    __table_args__ = (
        Index("ix_schedules_enabled_next_run", "enabled", "next_run_at"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    name: str = Field(max_length=200, unique=True)
    cron: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    missed: str = Field(default="run_once", max_length=16)
    enabled: bool = True
    # The template's agent and type, copied out of `template` for filtering and scope checks.
    agent_id: str = Field(max_length=128, index=True)
    type: str = Field(max_length=64)
    # A TaskCreate body (no sync/timeout/request_id) with its secrets sealed, as tasks store theirs.
    template: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    start_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_run_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_run_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_task_id: int | None = Field(default=None, sa_type=BigInteger)
    last_error: str = Field(default="", sa_type=Text)
    runs: int = 0
    # Who made it: firings act with this token's scope, and stop when it is deleted or expires.
    created_by: str = Field(default="", max_length=128)
    creator_id: int | None = Field(default=None, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# The Core tables, for the hot paths that skip the ORM's unit of work.
TASKS: Table = Task.__table__  # type: ignore[attr-defined]
TASK_LOGS: Table = LogEntry.__table__  # type: ignore[attr-defined]
AGENTS: Table = Agent.__table__  # type: ignore[attr-defined]
FILES: Table = StoredFile.__table__  # type: ignore[attr-defined]
CREDENTIALS: Table = Credential.__table__  # type: ignore[attr-defined]
AUDIT: Table = AuditEntry.__table__  # type: ignore[attr-defined]
SCHEDULES: Table = Schedule.__table__  # type: ignore[attr-defined]
