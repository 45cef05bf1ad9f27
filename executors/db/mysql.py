"""`mysql` and `doris`: pymysql over the MySQL protocol, or through goInception when the agent has one."""

from __future__ import annotations

from typing import ClassVar

from executors.db.base import TargetResult, TargetRun
from executors.db.params import Target
from executors.db.sql import SqlExecutor, SqlSession


class MySqlExecutor(SqlExecutor):
    """`mysql`: statements in batches with rollback SQL, or the whole script through goInception."""

    type: ClassVar[str] = "mysql"
    dialect: ClassVar[str] = "mysql"
    transactional: ClassVar[bool] = True

    def driver_modules(self, targets: list[Target]) -> list[str]:
        return [
            *super().driver_modules(targets),
            "pymysql",
            "executors.db.mysql_conn",
        ]

    def connect(self, target: Target, run: TargetRun) -> SqlSession:
        from executors.db.mysql_conn import open_session  # pymysql and sqlglot: agent side only

        return open_session(target, self.transactional)

    async def run_target(self, target: Target, run: TargetRun) -> TargetResult:
        url = run.ctx.config.get("goinception_url") if self.type == "mysql" else None
        if url:
            from executors.db.goinception import run_goinception

            return await run_goinception(str(url), target, run)
        return await super().run_target(target, run)  # without goInception, check_only is SqlExecutor's review


class DorisExecutor(MySqlExecutor):
    """`doris`: the MySQL protocol, but Doris has no multi-statement transactions: each statement commits
    on its own and no rollback SQL is produced."""

    type: ClassVar[str] = "doris"
    dialect: ClassVar[str] = "doris"
    transactional: ClassVar[bool] = False
    shows_rollback: ClassVar[bool] = False
