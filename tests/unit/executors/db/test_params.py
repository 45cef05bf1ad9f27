"""Checking database params in the cloud, and resolving targets on the agent (seed 004's precedence)."""

from __future__ import annotations

from typing import Any

import pytest

from executors.db.params import TargetError, parse_params, resolve_targets
from executors.registry import default_exec_timeout, get_executor
from wire.tasks import TaskRequest


def check(type_: str, command: str = "SELECT 1", file_id: str = "", **params: Any) -> None:
    get_executor(type_).validate(TaskRequest(type=type_, command=command, params=params, file_id=file_id))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "params: one of target, targets or connection is required"),
        ({"target": {"port": 3306}}, "params: target.host is required (or name a params.connection)"),
        ({"targets": [{"host": "a"}, {"port": 1}]}, "params: targets[1].host is required"),
        ({"target": {"host": "a"}, "targets": [{"host": "b"}]}, "params: give either target or targets, not both"),
        ({"target": {"host": "a", "port": 70000}}, "params.target.port: Input should be less than or equal to 65535"),
        ({"target": {"host": "a", "pasword": "x"}}, "params.target.pasword: unknown field"),
        ({"target": {"host": "a", "secret_ref": "vault:x"}}, "params.target: secret_ref is reserved and not supported"),
        ({"connection": "c", "exec_options": {"trans_batch_size": 0}}, "params.exec_options.trans_batch_size: Input"),
        ({"connection": "c", "exec_options": {"retries": 3}}, "params.exec_options.retries: unknown field"),
        ({"target": {"host": "a", "sslmode": "maybe"}}, "params.target.sslmode: Input should be 'disable'"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        check("postgres", **params)
    assert str(err.value).startswith(message)


def test_command_or_file_is_required() -> None:
    with pytest.raises(ValueError, match="command: command is empty"):
        check("mysql", command=" ", connection="main")
    check("mysql", command="", file_id="file-1", connection="main")


def test_defaults_per_type() -> None:
    p = parse_params({"target": {"host": "h"}})
    assert [(t.port, t.user, t.database) for t in resolve_targets("mysql", p, {})] == [(3306, "root", "mysql")]
    assert [(t.port, t.user, t.database, t.sslmode) for t in resolve_targets("postgres", p, {})] == [
        (5432, "postgres", "postgres", "disable")
    ]
    assert resolve_targets("mongo", p, {})[0].database == "admin"
    assert resolve_targets("clickhouse", p, {})[0].port == 9000
    http = parse_params({"target": {"host": "h", "protocol": "http"}})
    assert (resolve_targets("clickhouse", http, {})[0].port, resolve_targets("clickhouse", http, {})[0].database) == (
        8123,
        "default",
    )


def test_database_precedence_target_then_params_then_connection_then_default() -> None:
    conns = {"main": {"host": "db1", "port": 3307, "user": "app", "password": "pw", "database": "conn_db"}}
    resolve = lambda **p: resolve_targets("mysql", parse_params(p), conns)[0]  # noqa: E731
    assert resolve(connection="main").database == "conn_db"
    assert resolve(connection="main", database="param_db").database == "param_db"
    t = resolve(connection="main", database="param_db", target={"db": "target_db", "host": "db2"})
    assert (t.database, t.host, t.port, t.user) == ("target_db", "db2", 3307, "app")
    assert resolve(target={"host": "x", "database": "by_database"}).database == "by_database"
    assert resolve(target={"host": "x"}, database="param_db").database == "param_db"


def test_connection_of_another_type_is_refused() -> None:
    conns = {"pg": {"type": "postgres", "host": "h"}}
    with pytest.raises(TargetError, match="'pg' is a postgres connection, not mysql"):
        resolve_targets("mysql", parse_params({"connection": "pg"}), conns)


def test_exec_timeout_follows_timeout_ms_and_waves_of_targets() -> None:
    def limit(type_: str, **params: Any) -> int:
        return default_exec_timeout(TaskRequest(type=type_, command="SELECT 1", params=params))

    assert limit("mysql", target={"host": "h"}) == 600 + 30
    assert limit("doris", target={"host": "h"}) == 1800 + 30
    assert limit("postgres", target={"host": "h"}, exec_options={"timeout_ms": 5000}) == 5 + 30
    three = [{"host": "a"}, {"host": "b"}, {"host": "c"}]
    assert limit("postgres", targets=three, exec_options={"timeout_ms": 10_000, "concurrency": 2}) == 20 + 30


def test_a_caller_redirecting_a_named_connection_does_not_get_its_password() -> None:
    conns = {"prod": {"host": "db1", "user": "admin", "password": "agent-secret", "sslmode": "require"}}
    steal = resolve_targets("postgres", parse_params({"connection": "prod", "target": {"host": "evil"}}), conns)[0]
    assert (steal.host, steal.user, steal.password) == ("evil", "admin", None)
    weaker = resolve_targets("postgres", parse_params({"connection": "prod", "target": {"sslmode": "disable"}}), conns)
    assert weaker[0].password is None
    same = resolve_targets("postgres", parse_params({"connection": "prod", "target": {"database": "other"}}), conns)
    assert (same[0].host, same[0].password, same[0].database) == ("db1", "agent-secret", "other")


def test_username_given_by_the_caller_wins_over_the_connections_user() -> None:
    conns = {"prod": {"host": "db1", "user": "admin", "password": "pw"}}
    t = resolve_targets("mysql", parse_params({"connection": "prod", "target": {"username": "readonly"}}), conns)[0]
    assert t.user == "readonly"


@pytest.mark.parametrize("type_", ["clickhouse", "elasticsearch"])
def test_clickhouse_and_elasticsearch_default_to_the_connection_named_default(type_: str) -> None:
    """Seed 004 §4.4/§4.5: `params.connection` defaults to "default" for these two types."""
    command = '{"operation": "index", "index": "i", "doc": {}}' if type_ == "elasticsearch" else "SELECT 1"
    check(type_, command=command)  # accepted in the cloud: the agent has the named connection
    params = parse_params({"database": "db2"}, type_)
    assert params.connection == "default"
    (target,) = resolve_targets(type_, params, {"default": {"host": "ch1", "password": "pw"}})
    assert (target.host, target.database, target.password) == ("ch1", "db2", "pw")
    with pytest.raises(TargetError, match=r"no connection named 'default' in the agent's config \(known: other\)"):
        resolve_targets(type_, params, {"other": {"host": "x"}})
    # Params checked without their type still get the type's default on the agent.
    untyped = parse_params({"connection": "x"}).model_copy(update={"connection": None})
    assert resolve_targets(type_, untyped, {"default": {"host": "h"}})[0].host == "h"


@pytest.mark.parametrize("type_", ["mysql", "doris", "postgres", "mongo"])
def test_other_types_still_need_a_server_named(type_: str) -> None:
    command = '{"operation": "delete", "collection": "c", "filter": {"a": 1}}' if type_ == "mongo" else "SELECT 1"
    with pytest.raises(ValueError, match=r"^params: one of target, targets or connection is required"):
        check(type_, command=command)
    with pytest.raises(TargetError, match=f"params: one of target, targets or connection is required for {type_}"):
        resolve_targets(type_, parse_params({"connection": "x"}).model_copy(update={"connection": None}), {})


def test_the_default_connection_does_not_override_what_is_given() -> None:
    conns = {"default": {"host": "d"}, "main": {"host": "m"}}
    assert resolve_targets("clickhouse", parse_params({"connection": "main"}, "clickhouse"), conns)[0].host == "m"
    assert resolve_targets("clickhouse", parse_params({"target": {"host": "t"}}, "clickhouse"), conns)[0].host == "t"
