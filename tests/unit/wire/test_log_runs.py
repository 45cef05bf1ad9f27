"""A log batch's lines may come as runs (`more`): counted line by line against the request's bound."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from wire.tasks import MAX_BATCH_LINES, LogBatch, LogLine, TaskReport, TaskStatus


def test_a_run_counts_every_line_it_holds() -> None:
    run = LogLine(seq=3, message="a", more=["b", "c"])
    assert (run.count, run.last_seq, run.messages()) == (3, 5, ["a", "b", "c"])
    assert LogLine(seq=3, message="a").messages() == ["a"]
    # The older shape is what the body holds when no line has `more`.
    assert LogBatch(task_token="t", lines=[LogLine(seq=1, message="a")]).model_dump(exclude_none=True) == {
        "task_token": "t",
        "lines": [{"seq": 1, "stream": "stdout", "message": "a"}],
    }


@pytest.mark.parametrize("model", [LogBatch, TaskReport])
def test_more_lines_than_a_request_may_carry_are_refused_naming_lines(model: type[BaseModel]) -> None:
    half = MAX_BATCH_LINES // 2
    lines = [
        {"seq": 1, "message": "a", "more": ["b"] * half},
        {"seq": half + 2, "message": "a", "more": ["b"] * half},
    ]
    with pytest.raises(ValidationError) as refused:
        model.model_validate({"task_token": "t", "status": TaskStatus.success, "lines": lines})
    assert refused.value.errors()[0]["loc"] == ("lines",)
    assert f"at most {MAX_BATCH_LINES}" in str(refused.value)
    model.model_validate({"task_token": "t", "status": TaskStatus.success, "lines": lines[:1]})
