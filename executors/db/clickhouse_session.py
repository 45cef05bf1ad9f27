"""What both ClickHouse protocols share: errors, a query id per statement, the backstop, KILL QUERY.

ClickHouse has no transactions: each statement stands on its own and a failure leaves the earlier ones in
place, so there is no rollback SQL. Every statement runs under a query id of its own: a cancel or the
deadline stops it on the server with `KILL QUERY ... SYNC` over a second connection, and
`max_execution_time` ends it there should the agent not get to do so.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from abc import abstractmethod
from typing import Any, ClassVar

from executors.db import pools
from executors.db.sql import SqlSession

CONNECT_TIMEOUT_SECONDS = 10
KILL_TIMEOUT_SECONDS = 10
"""How long KILL QUERY ... SYNC may wait for the statement to stop."""
KILL_WAIT_SECONDS = 3
"""How long the agent waits for a KILL QUERY's answer over HTTP before it drops the statement's connection:
a canceled task must end within seconds, not after the client's 300 s read timeout."""
BACKSTOP_SLACK_SECONDS = 5
"""`max_execution_time` is the time left plus this, so the agent's own KILL at the deadline comes first."""


class ClickHouseError(RuntimeError):
    """A statement failed on the server; the message is the server's, without its stack trace."""


class ChSession(SqlSession):
    """One pooled connection (a native client, or an HTTP client in a ClickHouse session of its own)."""

    transactional: ClassVar[bool] = False

    def __init__(
        self, pool: pools.ConnectionPool[Any], lease: contextlib.ExitStack, deadline: float, notes: list[str]
    ) -> None:
        self._pool = pool
        self._notes = notes
        """What an interrupt has to tell the task (it runs in a worker thread; the executor reports them)."""
        self._lease = lease
        self._deadline = deadline
        """Loop time; the loop's clock is time.monotonic() (asyncio's default), read here in a worker thread."""
        self._item = pool.get()
        self._client: Any = self._item.conn
        self._query_id = ""
        self._stopped = False

    def _begin(self) -> tuple[str, dict[str, Any]]:
        """A fresh query id and the settings for the next query; refuses to start once interrupted."""
        if self._stopped:
            raise ClickHouseError("interrupted before the statement started")
        self._query_id = str(uuid.uuid4())
        left = max(1, math.ceil(self._deadline - time.monotonic()))
        return self._query_id, {"max_execution_time": left + BACKSTOP_SLACK_SECONDS}

    def interrupt(self) -> None:
        self._stopped = True
        killed = ""
        # The worker may move from one query to the next (the INSERT ... VALUES probe, then the insert)
        # while the first KILL is on its way: kill until the id holds still.
        while self._query_id and self._query_id != killed:
            killed = self._query_id
            try:
                self._kill(killed)
            except Exception as exc:
                # No confirmation: the statement may go on. Waiting longer would keep the task running, so
                # the session's connection is dropped (where the protocol allows) and the task says so.
                dropped = self._drop_statement()
                what = "the connection was dropped" if dropped else "the agent stopped waiting for it"
                self._notes.append(
                    f"KILL QUERY got no confirmation ({self._kill_failure(exc)}): {what};"
                    " the statement may still be running on the server"
                )
                return

    @abstractmethod
    def _kill(self, query_id: str) -> None:
        """Run KILL QUERY for `query_id` over a connection other than the session's."""

    def _kill_failure(self, exc: BaseException) -> str:
        """Why a KILL got no confirmation, in a few words."""
        return str(exc) or type(exc).__name__

    def _drop_statement(self) -> bool:
        """Close the connection the running statement waits on, so its worker returns now; False when the
        protocol's client cannot be closed safely from another thread."""
        return False

    def reusable(self) -> bool:
        """Whether the connection may serve the next task once this one is done with it."""
        return True

    def close(self, reusable: bool) -> None:
        try:
            self._pool.put(self._item, reusable and self.reusable())
        finally:
            self._lease.close()


def server_message(code: int, message: str) -> str:
    """A server error as `Code: N. message`, without its stack trace."""
    return f"Code: {code}. {message.split('Stack trace:')[0].strip()}"
