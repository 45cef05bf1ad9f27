"""The registry calls every hook directly: built-ins declare them, an older third-party class gets defaults."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from executors.base import DEFAULT_EXEC_TIMEOUT, BaseExecutor, Outcome
from executors.registry import get_executor, known_types, with_defaults
from wire.tasks import TaskRequest, TaskStatus


class OldStyle:
    """A plugin written before the hooks were declared: only type, validate and run."""

    type: ClassVar[str] = "old_style"

    def validate(self, req: TaskRequest) -> None:
        if not req.command:
            raise ValueError("command: required")

    async def run(self, task: Any, ctx: Any) -> Outcome:
        return Outcome(TaskStatus.success)


def test_an_old_plugin_gets_the_default_hooks_and_keeps_its_own() -> None:
    executor = with_defaults(OldStyle)()
    assert isinstance(executor, OldStyle) and isinstance(executor, BaseExecutor)
    req = TaskRequest(type="old_style", command="x")
    assert executor.exec_timeout_for(req) == DEFAULT_EXEC_TIMEOUT
    assert executor.shown_command("x --password=y") == "x --password=y"
    with pytest.raises(ValueError, match="command: required"):
        executor.validate(TaskRequest(type="old_style"))


@pytest.mark.parametrize("type_name", known_types())
def test_every_registered_type_declares_every_hook(type_name: str) -> None:
    executor = get_executor(type_name)
    assert isinstance(executor, BaseExecutor)
    assert executor.type == type_name
    assert executor.params_model.model_json_schema()["type"] == "object"


def test_params_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"^params\.count: must be a whole number from 1 to 100$"):
        get_executor("ping").validate(TaskRequest(type="ping", command="localhost", params={"count": 0}))
    with pytest.raises(ValueError, match=r"^params\.body_base64: body and body_base64 are exclusive"):
        get_executor("http_request").validate(
            TaskRequest(type="http_request", params={"url": "http://x", "body": "a", "body_base64": "YQ=="})
        )
    with pytest.raises(ValueError, match=r"^params\.url: url is required in params$"):
        get_executor("api").validate(TaskRequest(type="api"))
