"""`params` of the database types: which servers (target, targets, connection), options, audit metadata.

The models check a request in the cloud (no I/O); `resolve_targets` turns them into concrete servers on
the agent, where the named connections of its config file are known. Precedence (seed 004): connection
details from `target` over the named `connection`; database name from `target.db`/`target.database`, then
`params.database`, then the connection's, then the type's default.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from executors.base import parse_model
from wire.masker import MIN_SECRET_CHARS, Masker, map_strings
from wire.secrets import MASK


@dataclass(frozen=True)
class TypeDefaults:
    port: int
    user: str | None
    database: str | None
    timeout_ms: int


DEFAULTS: dict[str, TypeDefaults] = {
    "mysql": TypeDefaults(3306, "root", "mysql", 600_000),
    # Doris' MySQL-protocol port is the FE query port; it has no `mysql` database to fall back on.
    "doris": TypeDefaults(9030, "root", None, 1_800_000),
    "postgres": TypeDefaults(5432, "postgres", "postgres", 600_000),
    "clickhouse": TypeDefaults(9000, "default", "default", 600_000),
    "mongo": TypeDefaults(27017, None, "admin", 600_000),
    "elasticsearch": TypeDefaults(9200, None, None, 600_000),
}
SQL_TYPES = ("mysql", "doris", "postgres", "clickhouse")
"""The types whose scripts are SQL: they honour exec_options.check_only and allow_dangerous for statements."""
CLICKHOUSE_HTTP_PORT = 8123
DEFAULT_CONNECTION: dict[str, str] = {"clickhouse": "default", "elasticsearch": "default"}
"""Seed 004 §4.4/§4.5: these types use the agent's connection named `default` when the params name no
server; the others need one of target, targets or connection."""


class TargetSpec(BaseModel):
    """One server as a caller gives it (`params.target`, an item of `params.targets`, or a named connection)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, description="Label for this target in results and logs.")
    type: str | None = Field(None, description="Only in the agent's config: the type a named connection is for.")
    host: str | None = Field(None, min_length=1, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = Field(None, max_length=255)
    username: str | None = Field(None, max_length=255, description="Alias of user.")
    password: str | None = None
    db: str | None = Field(None, max_length=255)
    database: str | None = Field(None, max_length=255)
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    protocol: Literal["native", "http"] | None = None
    scheme: Literal["http", "https"] | None = None
    api_key: str | None = None
    flavor: Literal["elasticsearch", "opensearch"] | None = None
    verify_tls: bool | None = None
    secret_ref: str | None = None

    @model_validator(mode="after")
    def _no_secret_ref(self) -> TargetSpec:
        if self.secret_ref is not None:
            raise ValueError("secret_ref is reserved and not supported yet; give password or use params.connection")
        return self


class ExecOptions(BaseModel):
    """`params.exec_options` (seed 004), plus `max_rows`, `allow_dangerous` (`allow_all`) and `check_only`."""

    model_config = ConfigDict(extra="forbid")

    trans_batch_size: int = Field(200, ge=1, le=100_000, description="DML statements per transaction.")
    sleep_ms: int = Field(0, ge=0, le=3_600_000, description="Pause between batches.")
    timeout_ms: int | None = Field(None, ge=1, le=7 * 24 * 3600 * 1000, description="Limit per target.")
    backup: bool = Field(True, description="Record before-images and produce rollback SQL.")
    concurrency: int = Field(1, ge=1, le=64, description="Targets worked on at once.")
    max_rows: int = Field(1000, ge=0, le=1_000_000, description="Rows of a query kept in the result.")
    allow_dangerous: bool = Field(
        False,
        description="Run statements that change or destroy everything: SQL UPDATE/DELETE without WHERE, DROP, "
        "TRUNCATE; a mongo update or delete whose filter matches every document; an elasticsearch "
        "delete_by_query whose query matches every document. Refused before anything runs otherwise.",
    )
    allow_all: bool = Field(
        False,
        description="The older name of allow_dangerous for mongo and elasticsearch (still honoured there).",
    )
    check_only: bool = Field(
        False,
        description="SQL types: review the script without executing anything: each statement's kind, warnings "
        "(dangerous statements) and estimated rows where the server can tell (EXPLAIN). mysql with "
        "goInception configured on the agent: goInception's review (`--check=1`).",
    )

    @model_validator(mode="after")
    def _older_name(self) -> ExecOptions:
        # mongo and elasticsearch read allow_all, their older name: allow_dangerous turns it on too. SQL
        # types read only allow_dangerous (allow_all never allowed a DROP there).
        self.allow_all = self.allow_all or self.allow_dangerous
        return self


class Metadata(BaseModel):
    """Audit fields kept with the task and shown at the top of the result."""

    model_config = ConfigDict(extra="allow")

    env: str | None = None
    creator: str | None = None
    ticket: str | None = None


class DbParams(BaseModel):
    """`params` of every database type."""

    model_config = ConfigDict(extra="forbid")

    target: TargetSpec | None = None
    targets: list[TargetSpec] | None = Field(None, min_length=1, max_length=256)
    connection: str | None = Field(None, min_length=1, max_length=200)
    database: str | None = Field(None, max_length=255)
    file_name: str | None = Field(None, min_length=1, max_length=1000, description="Entry of a .zip file_id.")
    file_path: str | None = Field(None, min_length=1, description="Where file_id already lies on the agent.")
    exec_options: ExecOptions = Field(default_factory=ExecOptions)
    metadata: Metadata | None = None
    secret_keys: list[str] | None = Field(
        None, max_length=100, description="Further keys whose values are secrets: masked in output and when shown."
    )

    @model_validator(mode="after")
    def _where(self, info: ValidationInfo) -> DbParams:
        if self.target is not None and self.targets is not None:
            raise ValueError("give either target or targets, not both")
        type_name = (info.context or {}).get("type")
        if self.exec_options.check_only and type_name not in (None, *SQL_TYPES):
            raise ValueError(
                f"exec_options.check_only: only the SQL types ({', '.join(SQL_TYPES)}) can review, not {type_name}"
            )
        if self.target is None and self.targets is None and self.connection is None:
            if type_name not in DEFAULT_CONNECTION:
                raise ValueError("one of target, targets or connection is required")
            self.connection = DEFAULT_CONNECTION[type_name]
        if self.connection is None:
            for i, spec in enumerate([self.target] if self.target else self.targets or []):
                if not spec.host:
                    where = "target" if self.target else f"targets[{i}]"
                    raise ValueError(f"{where}.host is required (or name a params.connection)")
        return self


def parse_params(params: Mapping[str, Any], type_name: str | None = None) -> DbParams:
    """The checked params of `type_name` (its defaults applied: clickhouse and elasticsearch fall back on
    the connection `default`); ValueError names the first bad field as `params.<path>: <problem>`."""
    parsed: DbParams = parse_model(DbParams, params, type_name)
    return parsed


@dataclass(frozen=True)
class Target:
    """One concrete server to work on, after defaults and the agent's named connection are applied."""

    type: str
    host: str
    port: int
    user: str | None
    password: str | None
    database: str | None
    label: str
    sslmode: str = "disable"
    protocol: str = "native"
    scheme: str = "http"
    api_key: str | None = None
    flavor: str = "elasticsearch"
    verify_tls: bool = True

    @property
    def secrets(self) -> list[str]:
        """Values that must never appear in a log line, an error or a result."""
        return [s for s in (self.password, self.api_key) if s]

    def pool_key(self) -> tuple[Any, ...]:
        """Identifies a pool: same server, account and database share one (the password only as a digest)."""
        digest = hashlib.sha256("\0".join(self.secrets).encode()).hexdigest()
        return (
            self.type, self.host, self.port, self.user, self.database, self.sslmode, self.protocol, self.scheme,
            self.flavor, self.verify_tls, digest,
        )  # fmt: skip


class TargetError(ValueError):
    """A target cannot be resolved on this agent (unknown connection name, no host)."""


def resolve_targets(type_name: str, params: DbParams, connections: Mapping[str, Mapping[str, Any]]) -> list[Target]:
    """Concrete targets in the order given; raises TargetError naming the field."""
    base: dict[str, Any] = {}
    name = params.connection
    if name is None and params.target is None and params.targets is None:
        # Params checked without their type (parse_params(p) alone) still get the type's default here.
        name = DEFAULT_CONNECTION.get(type_name)
        if name is None:
            raise TargetError(f"params: one of target, targets or connection is required for {type_name}")
    if name is not None:
        if name not in connections:
            known = ", ".join(sorted(connections)) or "none"
            raise TargetError(f"params.connection: no connection named {name!r} in the agent's config (known: {known})")
        try:
            named = TargetSpec.model_validate(dict(connections[name]))
        except ValidationError as exc:
            raise TargetError(f"agent config connections.{name}: {exc.errors()[0]['msg']}") from None
        if named.type not in (None, type_name):
            raise TargetError(f"params.connection: {name!r} is a {named.type} connection, not {type_name}")
        base = named.model_dump(exclude_none=True)
    specs: list[TargetSpec | None] = [None]
    if params.target is not None:
        specs = [params.target]
    elif params.targets:
        specs = list(params.targets)
    out: list[Target] = []
    for i, spec in enumerate(specs):
        given = spec.model_dump(exclude_none=True) if spec is not None else {}
        where = "params.target" if params.target else f"params.targets[{i}]" if params.targets else "params.connection"
        out.append(_target(type_name, base, given, params.database, where))
    return out


# Changing where or how the named connection's credentials travel would hand them to whoever wrote the
# task (a host of theirs, plain text instead of TLS): then the connection's secrets are not used.
_ROUTE_FIELDS = ("host", "port", "sslmode", "scheme", "protocol", "verify_tls")


def _target(type_name: str, base: dict[str, Any], given: dict[str, Any], database: str | None, where: str) -> Target:
    d = DEFAULTS[type_name]
    base, given = _normal(base), _normal(given)
    if base and any(k in given and given[k] != base.get(k) for k in _ROUTE_FIELDS):
        base = {k: v for k, v in base.items() if k not in ("password", "api_key")}
    merged = {**base, **given}
    host = merged.get("host")
    if not host:
        raise TargetError(f"{where}.host is required")
    protocol = merged.get("protocol", "native")
    default_port = CLICKHOUSE_HTTP_PORT if type_name == "clickhouse" and protocol == "http" else d.port
    port = int(merged.get("port") or default_port)
    db = given.get("db") or given.get("database") or database or base.get("db") or base.get("database") or d.database
    user = merged.get("user") or d.user
    label = merged.get("name") or f"{host}:{port}" + (f"/{db}" if db else "")
    return Target(
        type=type_name,
        host=host,
        port=port,
        user=user,
        password=merged.get("password"),
        database=db,
        label=label,
        sslmode=merged.get("sslmode", "disable"),
        protocol=protocol,
        scheme=merged.get("scheme", "http"),
        api_key=merged.get("api_key"),
        flavor=merged.get("flavor", "elasticsearch"),
        verify_tls=merged.get("verify_tls", True),
    )


def _normal(spec: dict[str, Any]) -> dict[str, Any]:
    """`username` is an alias of `user`: one key, so a caller's username overrides a connection's user."""
    out = dict(spec)
    if "username" in out:
        out.setdefault("user", out["username"])
        del out["username"]
    return out


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret value replaced; drivers sometimes echo connection strings in errors.
    Values are masked as in all output (wire.masker): not one shorter than 4 characters, nor one that is
    itself a word like `password`, which would turn a server's `Wrong password` into `Wrong ******`.
    A secret cut short where a statement is shortened for a log line or the result text (`...`) is masked
    too: the whole value no longer matches there, and its first characters would show."""
    return _masker(tuple(secrets)).text(text) if secrets else text


CUT = "..."
"""What ends a statement or message shortened for display (`Statement.short`, the result text)."""


class _CutMasker:
    """The task's Masker, then the beginnings of its secrets that stand right before a cut."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.masker = Masker.of(secrets)
        prefixes = {
            s[:n] for s in self.masker.secrets for n in range(MIN_SECRET_CHARS, len(s)) if not s[:n].endswith(".")
        }
        self.cut = (
            re.compile(
                "(?:" + "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True)) + r")(?= ?\.\.\.)"
            )
            if prefixes
            else None
        )

    def text(self, text: str) -> str:
        text = self.masker.text(text)
        if self.cut is not None and CUT in text:
            text = self.cut.sub(MASK, text)
        return text


@lru_cache(maxsize=64)
def _masker(secrets: tuple[str, ...]) -> _CutMasker:
    return _CutMasker(secrets)


def scrub_value(value: Any, secrets: list[str]) -> Any:
    """A JSON-like value (an entry of `data`) with every string in it scrubbed: a server's error, the
    statement it quotes and the rows it returns all reach the stored result."""
    if not secrets:
        return value
    return map_strings(value, _masker(tuple(secrets)).text)
