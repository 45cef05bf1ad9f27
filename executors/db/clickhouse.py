"""`clickhouse`: statements one by one over the native protocol (clickhouse-driver) or HTTP (clickhouse-connect).

The protocols live in `clickhouse_native` and `clickhouse_http`, what they share in `clickhouse_session`,
the native INSERT ... VALUES rewrite in `clickhouse_values`. This module imports no driver: the cloud
imports it only to validate requests.
"""

from __future__ import annotations

from typing import ClassVar

from executors.db.base import TargetRun
from executors.db.params import Target
from executors.db.sql import SqlExecutor, SqlSession


class ClickHouseExecutor(SqlExecutor):
    """`clickhouse`: `target.protocol` native (port 9000, default) or http (port 8123)."""

    type: ClassVar[str] = "clickhouse"
    dialect: ClassVar[str] = "clickhouse"
    shows_rollback: ClassVar[bool] = False

    def driver_modules(self, targets: list[Target]) -> list[str]:
        names = super().driver_modules(targets)
        if any(t.protocol == "http" for t in targets):
            names += [
                "clickhouse_connect.driver.httpclient",
                "clickhouse_connect.driver.httputil",
                "executors.db.clickhouse_http",
            ]
        if any(t.protocol != "http" for t in targets):
            names += ["clickhouse_driver", "executors.db.clickhouse_native"]
        return names

    def connect(self, target: Target, run: TargetRun) -> SqlSession:
        if target.protocol == "http":
            from executors.db import clickhouse_http

            return clickhouse_http.open_session(target, run.deadline)
        from executors.db import clickhouse_native

        return clickhouse_native.open_session(target, run.deadline)
