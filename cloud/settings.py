"""Cloud settings, from TIANGONG_* environment variables (one class, read through a cached getter)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    task_expires_seconds: int = Field(
        3600, ge=1, description="Default `expires_in`: a pending task no agent claims in time fails `not delivered`."
    )
    recheck_seconds: float = Field(
        5.0,
        gt=0,
        description="Waiting requests (claims, sync calls, log follows) re-read the database at least this often, "
        "so a wake-up lost between replicas only delays them.",
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

    audit_retention_days: int = Field(
        90, ge=1, le=36500, description="Audit records older than this many days are deleted by the background pass."
    )
    token_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="How long a replica trusts a token it has looked up; a deleted token, agent or scope change "
        "takes effect on other replicas within this time.",
    )

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tiangong.db').resolve()}"


@cache
def get_settings() -> CloudSettings:
    """The process-wide settings, read from the environment on first use."""
    return CloudSettings()
