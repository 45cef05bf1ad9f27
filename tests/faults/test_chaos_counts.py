"""How the chaos run (bench/chaos.py) counts runs: per (task, attempt), from the marker file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.chaos import run_problems, runs


def test_the_marker_is_counted_per_task_and_attempt(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.write_text("task-1 1 start 10\ntask-1 2 start 11\ntask-1 2 end 11\ntask-2 1 start 12\ntask-2 1 start 13\n")
    assert runs(marker, "start") == {"task-1": Counter({1: 1, 2: 1}), "task-2": Counter({1: 2})}
    assert runs(marker, "end") == {"task-1": Counter({2: 1})}


def test_a_retried_task_that_ran_each_attempt_once_is_fine() -> None:
    assert run_problems(Counter({1: 1, 2: 1}), Counter({2: 1}), attempts=2, retries=1) is None
    assert run_problems(Counter(), Counter(), attempts=0, retries=0) is None


def test_an_attempt_that_ran_twice_is_flagged_even_within_the_attempt_count() -> None:
    # Two runs of attempt 1 and none of attempt 2: the per-task count (2 <= attempts) would miss it.
    problem = run_problems(Counter({1: 2}), Counter({1: 1}), attempts=2, retries=1)
    assert problem is not None and "attempts [1] ran twice" in problem
    assert run_problems(Counter({1: 1}), Counter({1: 2}), attempts=2, retries=1) is not None


def test_more_runs_than_attempts_or_an_attempt_never_handed_out_is_flagged() -> None:
    assert run_problems(Counter({1: 1, 2: 1}), Counter(), attempts=1, retries=0) is not None
    assert run_problems(Counter({3: 1}), Counter({3: 1}), attempts=2, retries=1) is not None
