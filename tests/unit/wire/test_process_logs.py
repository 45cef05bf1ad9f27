"""The processes' own log records: JSON lines carrying the request and task ids of their context."""

from __future__ import annotations

import io
import logging
import sys

import orjson
import pytest

from wire import logs
from wire.logs import REQUEST_ID, TASK_ID, JsonLines, Text


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("tiangong.cloud", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_json_line_with_the_context_ids() -> None:
    request, task = REQUEST_ID.set("r-1"), TASK_ID.set("task-7")
    try:
        line = JsonLines().format(_record("lease of %s lost", "task-7"))
    finally:
        REQUEST_ID.reset(request)
        TASK_ID.reset(task)
    doc = orjson.loads(line)
    assert doc["level"] == "warning" and doc["logger"] == "tiangong.cloud" and doc["msg"] == "lease of task-7 lost"
    assert doc["request_id"] == "r-1" and doc["task_id"] == "task-7" and doc["ts"].endswith("+00:00")
    assert "\n" not in line


def test_json_line_without_ids_and_with_an_exception() -> None:
    doc = orjson.loads(JsonLines().format(_record("failed\nsecond line", exc=True)))
    assert "request_id" not in doc and "task_id" not in doc
    assert doc["msg"] == "failed\nsecond line" and "ValueError: boom" in doc["exc"]


def test_text_shows_the_ids_in_brackets() -> None:
    token = TASK_ID.set("task-3")
    try:
        assert Text().format(_record("started")).endswith("tiangong.cloud: started [task=task-3]")
    finally:
        TASK_ID.reset(token)
    assert Text().format(_record("plain")).endswith("plain")


def test_configure_writes_json_lines_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stderr", stream)
    for flag in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):  # configure() turns them off
        monkeypatch.setattr(logging, flag, getattr(logging, flag))
    try:
        logs.configure("INFO", "auto")
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("tiangong.agent").info("registered")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [orjson.loads(ln) for ln in stream.getvalue().splitlines()]
    assert [d["logger"] for d in lines] == ["uvicorn.error", "tiangong.agent"]
