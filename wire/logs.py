"""The processes' own logs (the cloud's, an agent's: not tasks' logs): JSON lines for machines, text for a
person at a terminal, each record carrying the request and task it belongs to.

The ids live in context variables: the cloud's middleware sets `request_id` (and `task_id` when the path
names a task) for everything a request logs; the agent sets `task_id` around an attempt, which every
asyncio task started from it inherits (log shipping, result delivery).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("tiangong_request_id", default=None)
TASK_ID: ContextVar[str | None] = ContextVar("tiangong_task_id", default=None)

LogFormat = Literal["auto", "json", "text"]


class JsonLines(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and request_id / task_id / exc when there."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (request_id := REQUEST_ID.get()) is not None:
            doc["request_id"] = request_id
        if (task_id := TASK_ID.get()) is not None:
            doc["task_id"] = task_id
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class Text(logging.Formatter):
    """The familiar line, with the ids in brackets when there."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{k}={v}" for k, v in (("request", REQUEST_ID.get()), ("task", TASK_ID.get())) if v)
        return f"{line} [{ids}]" if ids else line


def configure(level: str = "INFO", fmt: LogFormat = "auto") -> None:
    """Send every logger's records (uvicorn's too) to stderr in `fmt`: JSON lines, or text when `auto` and
    stderr is a terminal."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    # Neither format shows a record's source line, thread or process: not finding them saves a stack walk
    # and three lookups per record (a fifth of the cost of the agent's one line per task).
    logging._srcfile = None  # logging documents this switch in its source
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # Python 3.12 and later
        logging.logAsyncioTasks = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if use_json else Text())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns what matters
