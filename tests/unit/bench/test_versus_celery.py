"""How bench/versus_celery.py turns figures into ratios and targets, and summarises a py-spy profile."""

from __future__ import annotations

import os
from typing import Any

from bench.measuring import cpu_s
from bench.profile_summary import summarise
from bench.versus_celery import compare


def figures(p50: float, p95: float, tps: float, replicas: int = 1) -> dict[str, Any]:
    return {"replicas": replicas, "roundtrip_ms": {"p50": p50, "p95": p95}, "throughput": {"tasks_per_s": tps}}


def test_ratios_are_tiangong_over_celery_and_each_target_is_met_or_not() -> None:
    celery = {"roundtrip_solo_1_ms": {"p50": 4.0, "p95": 8.0}, "throughput": {"tasks_per_s": 400.0}}
    tiangong = {"sqlite": figures(3.0, 8.0, 1200.0), "postgres-2": figures(9.0, 12.0, 500.0, replicas=2)}
    out = compare({"celery": celery, "tiangong": tiangong})
    assert out["tiangong_over_celery"]["sqlite"] == {"roundtrip_p50": 0.75, "roundtrip_p95": 1.0, "throughput": 3.0}
    assert out["tiangong_over_celery"]["postgres-2"]["throughput"] == 1.25
    assert out["targets"] == {
        "sqlite: round trip p50 3.0 ms / Celery 4.0 ms = 0.75 <= 1.0": "met",
        "sqlite: throughput 1200.0 / Celery 400.0 tasks/s = 3.0 >= 2.5": "met",
        "sqlite: throughput 1200.0 tasks/s >= 1000": "met",
        "postgres-2: throughput 500.0 / Celery 400.0 tasks/s = 1.25 >= 1.5": "not met",
    }


def test_the_interleaved_round_trip_decides_the_round_trip_target_when_measured() -> None:
    """Measured one after the other, Celery looks slower (the machine was slower then); interleaved,
    the same calls say Tiangong is slower: the interleaved ratio is the one the target is judged on."""
    celery = {"roundtrip_solo_1_ms": {"p50": 8.0, "p95": 9.0}, "throughput": {"tasks_per_s": 400.0}}
    sqlite = figures(6.0, 8.0, 1200.0)
    sqlite["interleaved_roundtrip"] = {"celery_ms": {"p50": 4.0}, "tiangong_ms": {"p50": 6.0}, "ratio_p50": 1.5}
    out = compare({"celery": celery, "tiangong": {"sqlite": sqlite}})
    assert out["tiangong_over_celery"]["sqlite"]["roundtrip_p50"] == 0.75
    assert out["tiangong_over_celery"]["sqlite"]["roundtrip_p50_interleaved"] == 1.5
    interleaved = "sqlite: round trip p50, interleaved with Celery's, 6.0 ms / 4.0 ms = 1.5 <= 1.0"
    assert out["targets"][interleaved] == "not met"
    assert not any(text.startswith("sqlite: round trip p50 6.0") for text in out["targets"])


def test_a_profile_is_summarised_by_package_function_and_tiangong_step() -> None:
    collapsed = "\n".join(
        [
            "run (asyncio/runners.py:118);create_task (cloud/api/routes/tasks.py:46);"
            "do_execute (sqlalchemy/engine/default.py:9) 6",
            "run (asyncio/runners.py:118);send (uvicorn/protocols/http/httptools_impl.py:422) 3",
            "run (asyncio/runners.py:118) 1",
            "a cut-short line without a count",
        ]
    )
    out = summarise(collapsed)
    assert out["samples"] == 10
    assert out["self_percent_by_package"] == [["sqlalchemy", 60.0], ["uvicorn", 30.0], ["asyncio", 10.0]]
    assert out["self_percent_by_function"][0] == ["do_execute (sqlalchemy)", 60.0]
    assert out["inclusive_percent_by_tiangong_function"] == [["create_task (tiangong cloud)", 60.0]]


def test_cpu_is_read_for_a_process_and_its_children() -> None:
    assert cpu_s(os.getpid()) > 0
    assert cpu_s(2**22 + 1) == 0.0  # no such process: nothing, not an error
