"""What each database type loads before its deadline starts: modules that exist, per protocol and flavor."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from executors.db.base import DbExecutor
from executors.db.params import parse_params, resolve_targets
from executors.registry import get_executor


def modules(type_: str, **target: Any) -> list[str]:
    executor = get_executor(type_)
    assert isinstance(executor, DbExecutor)
    targets = resolve_targets(type_, parse_params({"target": {"host": "h", **target}}, type_), {})
    return executor.driver_modules(targets)


@pytest.mark.parametrize(
    ("type_", "target", "expected"),
    [
        ("mysql", {}, {"pymysql", "sqlglot.dialects.mysql"}),
        ("doris", {}, {"pymysql", "sqlglot.dialects.doris"}),
        ("postgres", {}, {"psycopg", "sqlglot.dialects.postgres"}),
        ("clickhouse", {}, {"clickhouse_driver", "sqlglot.dialects.clickhouse"}),
        ("clickhouse", {"protocol": "http"}, {"clickhouse_connect.driver.httpclient"}),
        ("mongo", {}, {"pymongo"}),
        ("elasticsearch", {}, {"elasticsearch"}),
        ("elasticsearch", {"flavor": "opensearch"}, {"opensearchpy"}),
    ],
)
def test_driver_modules_are_the_types_and_all_import(type_: str, target: dict[str, Any], expected: set[str]) -> None:
    names = modules(type_, **target)
    assert expected <= set(names)
    for name in names:
        importlib.import_module(name)
    if target.get("protocol") == "http":
        assert "clickhouse_driver" not in names
