"""`clickhouse`: statements one by one over the native protocol (clickhouse-driver) or HTTP (clickhouse-connect).

The protocols live in `clickhouse_native` and `clickhouse_http`, what they share in `clickhouse_session`,
the native INSERT ... VALUES rewrite in `clickhouse_values`. This module imports no driver: the cloud
imports it only to validate requests.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from executors.db.base import TargetResult, TargetRun
from executors.db.params import Target
from executors.db.sql import SqlExecutor, SqlSession
from wire.tasks import LogLevel


@dataclasses.dataclass
class ChRun(TargetRun):
    """A target's run that also collects what the session's interrupt found (a KILL with no answer): the
    interrupt runs in a worker thread, so it is reported here, on the loop, once the run is over."""

    notes: list[str] = dataclasses.field(default_factory=list)


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

    async def run_target(self, target: Target, run: TargetRun) -> TargetResult:
        ch_run = ChRun(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})
        result = await super().run_target(target, ch_run)
        for note in ch_run.notes:
            run.log(note, LogLevel.warn)
            result.error = f"{result.error}; {note}" if result.error else note
        return result

    def connect(self, target: Target, run: TargetRun) -> SqlSession:
        notes = run.notes if isinstance(run, ChRun) else []
        if target.protocol == "http":
            from executors.db import clickhouse_http

            return clickhouse_http.open_session(target, run.deadline, notes)
        from executors.db import clickhouse_native

        return clickhouse_native.open_session(target, run.deadline, notes)
