"""Cloud settings, from TIANGONG_* environment variables (one class, read through a cached getter)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from executors.policy import parse_rules
from executors.registry import known_types


class CloudSettings(BaseSettings):
    """Everything the cloud process can be configured with."""

    model_config = SettingsConfigDict(env_prefix="TIANGONG_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Database (SQLite), tokens and uploaded files.")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means SQLite at <data_dir>/tiangong.db (WAL mode)."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for callers; generated and saved in the data dir when unset."
    )
    agent_token: SecretStr | None = Field(
        None,
        description="The bootstrap registration token: an agent registering with it receives its own agent "
        "token (tga_...). Generated (tgr_...) and saved in the data dir when unset. More registration tokens, "
        "expiring or single-use, are made with POST /api/v1/tokens.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key(s), comma-separated, newest first, sealing secrets in stored task params; "
        "generated into <data_dir>/secret.key when unset. Replicas must share it.",
    )
    lease_seconds: float = Field(
        30.0, gt=0, description="A running task whose agent sends no heartbeat for this long is lost."
    )
    heartbeat_seconds: float = Field(5.0, gt=0, description="How often agents are asked to heartbeat.")
    agent_offline_seconds: float = Field(
        30.0, gt=0, description="An agent not heard from for this long is shown offline."
    )
    reaper_interval_seconds: float = Field(
        1.0,
        gt=0,
        description="How often the background pass runs (expired leases, undelivered tasks, retries coming due); "
        "with several replicas one of them runs each pass.",
    )
    schedule_interval_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often each replica looks for schedules that came due; a firing is this much late at most "
        "(when the cloud is running).",
    )
    schedule_missed_grace_seconds: float = Field(
        60.0,
        gt=0,
        description="A schedule's firing later than this after its time (the cloud was not running) is missed: "
        "run once or skipped, as the schedule's `missed` says.",
    )
    # Fleet runs (docs/fleet.md).
    fleet_max_targets: int = Field(
        1000, ge=1, le=100_000, description="Most agents one fleet run (a task with `agent_selector`) may target."
    )
    fleet_interval_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How often each replica re-checks running fleet runs even without a wake-up (a child ending "
        "wakes it at once): the longest a lost wake-up delays the next target.",
    )
    task_expires_seconds: int = Field(
        3600, ge=1, description="Default `expires_in`: a pending task no agent claims in time fails `not delivered`."
    )
    recheck_seconds: float = Field(
        5.0,
        gt=0,
        description="Waiting requests (claims, sync calls, log follows) re-read the database at least this often, "
        "so a wake-up lost between replicas only delays them.",
    )
    idle_recheck_seconds: float = Field(
        60.0,
        gt=0,
        description="While every wake-up is known to arrive (SQLite; PostgreSQL with this replica's LISTEN "
        "connection up), waiting claims re-read the database this often instead of every recheck_seconds, so "
        "idle agents cost no database work; the fast pace resumes while the listener reconnects.",
    )
    channel_enabled: bool = Field(
        True,
        description="Offer agents the persistent channel (a WebSocket per agent process at "
        "/api/v1/agents/{id}/channel); when off, the upgrade is refused and agents use long-poll HTTP.",
    )
    channel_claim_wait_max_seconds: float = Field(
        600.0,
        gt=0,
        description="Upper bound for a claim's wait on an agent channel. The connection is open anyway, so an "
        "idle agent renews its claim this seldom rather than every claim_wait_max_seconds.",
    )
    channel_max_in_flight: int = Field(
        256,
        ge=1,
        description="Requests one agent channel may have running at once; the next frame is read when one ends "
        "(backpressure), so one agent token cannot make the cloud hold unbounded work.",
    )
    channel_ping_seconds: float = Field(
        30.0,
        gt=0,
        description="The cloud pings every agent channel this often and closes one whose pong is this late; the "
        "agent drops a channel silent for three times this. An idle agent on a channel sends no heartbeats: "
        "its open channel is what shows it online.",
    )
    channel_token_recheck_seconds: float = Field(
        60.0,
        gt=0,
        description="An agent channel checks its token again before every hand-out of tasks, and otherwise at "
        "the first request after this long. Revoking a token or deleting an agent closes its open channels at "
        "once, on every replica, even an idle one that sends nothing.",
    )
    max_log_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Output kept per task; head and tail are kept past it."
    )
    max_upload_bytes: int = Field(
        1024**3, ge=1, description="Largest file accepted by POST /api/v1/files; checked while the body streams in."
    )
    otel_enabled: bool = Field(
        False, description="FastAPI's native OpenTelemetry (traces, metrics, logs) through the global providers."
    )
    fast_create: bool = Field(
        True,
        description="Answer a plain POST /api/v1/tasks (a caller's token, a small JSON body, no Idempotency-Key "
        "header, no fleet run) without FastAPI's per-request machinery; the answers are the route's. Off: every create "
        "goes through the route. Off as well while otel_enabled (each create is then the route's span).",
    )
    access_log: Literal["all", "callers", "off"] = Field(
        "callers",
        description="A log record per request (method, path, status, ms, request id): for callers' requests, all "
        "(agents' long-polls and log batches too), or off.",
    )
    max_distribute_agents: int = Field(
        1000, ge=1, description="Most agents one POST /api/v1/files/{id}/distribute may place a file on."
    )
    claim_wait_max_seconds: float = Field(60.0, gt=0, description="Upper bound for a claim long-poll.")
    max_request_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="Largest JSON body a caller may send (task creation, JSON-RPC); larger is 413, refused "
        "before it is read. Uploads have their own limit (max_upload_bytes).",
    )
    max_agent_request_bytes: int = Field(
        96 * 1024 * 1024,
        ge=1024,
        description="Largest JSON body an agent may send (a result with its output and last log lines, a log "
        "batch); must exceed max_log_bytes, since JSON escaping can grow text.",
    )
    max_json_depth: int = Field(
        64,
        ge=2,
        le=200,  # orjson and pydantic give up near 255 levels: deeper could be stored but never read
        description="Deepest nesting of objects and arrays accepted in a JSON body; a caller's deeper body is "
        "a 400, an agent's deeper `data` is cut at this depth and marked.",
    )
    rpc_max_batch: int = Field(50, ge=1, description="Most calls in one JSON-RPC batch; a larger batch is refused.")
    rpc_max_answer_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest JSON-RPC answer; a call whose answer would be larger gets an error asking to "
        "narrow it (e.g. task_query with more conditions).",
    )
    rpc_max_scope_checks: int = Field(
        100,
        ge=1,
        description="Most (uuid, type) pairs a JSON-RPC task_query or task_delete may name in its conditions, each "
        "checked against the token's scope; more is refused as invalid params (the conditions are AND-ed: past "
        "one distinct uuid and one distinct type they match nothing anyway).",
    )
    rpc_idle_timeout_seconds: float = Field(
        300.0,
        ge=0,
        description="A JSON-RPC WebSocket with no message and no call running for this long is closed (4008); "
        "0 keeps idle sockets open.",
    )
    rpc_auth_timeout_seconds: float = Field(
        30.0,
        ge=0,
        description="A JSON-RPC WebSocket opened without an Authorization header must make a call with a valid "
        "params.token within this long, else it is closed (4401), so anonymous sockets cannot be held; 0: "
        "no limit.",
    )
    request_idle_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A request whose headers, or the next part of whose body, do not arrive within this time "
        "is dropped (408 for a body), so half-sent requests cannot hold connections open.",
    )
    min_body_rate_bytes: int = Field(
        1024,
        ge=1,
        description="Bytes per second a request body (uploads included) must average once "
        "request_idle_timeout_seconds has passed; slower is 408.",
    )
    max_connections: int = Field(
        4096,
        ge=16,
        description="Most open connections and requests at once (uvicorn's limit_concurrency); above it, 503. "
        "Each agent process holds one or two long-polls.",
    )
    shell_attach_wait_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="web_shell: how long a browser attaching to a pending or just-claimed task waits for the "
        "agent's side of the relay to connect (docs/web-shell.md).",
    )
    shell_idle_max_seconds: float = Field(
        3600.0,
        gt=0,
        description="web_shell: the relay ends a session through which no message passed for this long, "
        "whatever the task's params.idle_timeout says.",
    )
    shell_max_message_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="web_shell: largest WebSocket message the relay passes on (a paste, a burst of output); a "
        "larger one ends the session with close code 1009.",
    )

    bootstrap_registration: bool = Field(
        True,
        description="Accept the bootstrap registration token (agent_token). Turn it off once agents register "
        "with registration tokens made by POST /api/v1/tokens (scoped, expiring): it registers any agent id.",
    )
    audit_retention_days: int = Field(
        90, ge=1, le=36500, description="Audit records older than this many days are deleted by the background pass."
    )
    retention_days: int = Field(
        90,
        ge=0,
        le=36500,
        description="Finished tasks (success, failed, timeout, canceled) that ended more than this many days ago "
        "are deleted with their log lines by the background pass; 0 keeps them forever. Pending and running "
        "tasks are never deleted.",
    )
    retention_interval_seconds: float = Field(
        60.0, gt=0, description="How often the retention pass looks for finished tasks past retention_days."
    )
    retention_batch: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Most tasks, and most log rows (runs of lines), one retention transaction deletes; the pass "
        "commits and pauses between batches, so requests never wait long behind it.",
    )
    metrics_final_counts_seconds: float = Field(
        60.0,
        ge=0,
        description="GET /metrics counts finished tasks by status and type at most this often (the last count is "
        "reported meanwhile): a count over a million tasks costs most of a second. Pending and running tasks are "
        "counted at every scrape.",
    )
    list_count_limit: int = Field(
        1000,
        ge=1,
        description="GET /api/v1/tasks counts the matching tasks up to this many; past it `total` is a lower bound "
        "and `total_exact` is false (a count over a million rows costs more than the page).",
    )
    token_cache_seconds: float = Field(
        60.0,
        ge=0,
        le=600,
        description="How long a replica trusts a token it has looked up before reading it again; 0 looks up every "
        "use. A deleted token or agent is refused at once on every replica all the same: its wake-up empties each "
        "replica's cache, and a replica whose PostgreSQL listener is reconnecting looks every token up meanwhile. "
        "This bounds only a listener whose connection went silent (TCP keepalives find that within ~25 s).",
    )

    policy_mode: Literal["deny", "allow", "off"] = Field(
        "deny",
        description="Command policy for shell/python/execute tasks, checked at creation (403 naming the rule): "
        "`deny` refuses commands matching a deny rule; `allow` also refuses any command matching no allow rule; "
        "`off` checks no commands. A guard rail, not a sandbox (docs/command-policy.md).",
    )
    policy_defaults: bool = Field(
        True, description="Use the built-in deny rules (sudo, su, rm -rf /, mkfs, dd to a disk, reboot, fork bombs...)."
    )
    policy_deny: list[str] = Field(
        default_factory=list,
        description='More deny rules, as a JSON list of "name=regex" (one named like a built-in rule replaces it).',
    )
    policy_allow: list[str] = Field(
        default_factory=list, description='Allow rules for policy_mode "allow", as a JSON list of "name=regex".'
    )
    policy_refuse_types: list[str] = Field(
        default_factory=list, description='Task types refused at creation whatever the command, e.g. ["python"].'
    )

    @field_validator("policy_deny", "policy_allow")
    @classmethod
    def _policy_rules(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # A bad regex stops the cloud at start, naming the rule, rather than at the first task.
        parse_rules(value, "deny" if info.field_name == "policy_deny" else "allow")
        return value

    @field_validator("policy_refuse_types")
    @classmethod
    def _policy_types(cls, value: list[str]) -> list[str]:
        # A misspelt type would refuse nothing: name it instead.
        known = known_types()
        for name in value:
            if name not in known:
                raise ValueError(f"unknown task type {name!r}; known types: {', '.join(known)}")
        return value

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tiangong.db').resolve()}"


@cache
def get_settings() -> CloudSettings:
    """The process-wide settings, read from the environment on first use."""
    return CloudSettings()
