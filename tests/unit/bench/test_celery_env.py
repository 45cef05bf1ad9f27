"""Celery's side of bench/versus_celery.py runs in a venv of its own (bench/celery): finding it, what the
side may import, and how its raw JSON reads as the same figures as Tiangong's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measuring import WARM_UP, percentiles, sampled_calls
from bench.versus_celery import ROOT, celery_figures, celery_python


def test_a_missing_celery_venv_says_to_run_make_bench_celery_env(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        celery_python(tmp_path / "python")
    assert "make bench-celery-env" in str(exc.value.code)
    assert str(tmp_path / "python") in str(exc.value.code)
    (tmp_path / "python").touch()
    assert celery_python(tmp_path / "python") == tmp_path / "python"


def test_the_celery_side_needs_only_the_standard_library_to_start() -> None:
    # -S: no site-packages at all, so nothing of Tiangong's venv (aiohttp, the tests' harness) is there;
    # celery and redis are imported only once it measures, in the Celery venv.
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(ROOT / "bench" / "celery_side.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--redis-db" in done.stdout


def test_sampled_calls_keep_every_sample_and_the_cpu_of_each_process() -> None:
    calls = []
    out = sampled_calls(lambda: calls.append(1), 5, {"me": os.getpid()})
    assert len(calls) == WARM_UP + 5
    assert len(out["samples_ms"]) == 5
    assert set(out) == {"samples_ms", "caller_cpu_ms_per_call", "me_cpu_ms_per_call"}


def test_the_celery_sides_raw_json_reads_as_percentiles_and_throughput_figures() -> None:
    samples = [float(ms) for ms in range(1, 101)]
    roundtrip = {"samples_ms": samples, "caller_cpu_ms_per_call": 2.5, "worker_cpu_ms_per_call": 3.0}
    raw = {
        "redis": "redis://127.0.0.1:6379/13",
        "roundtrip_solo_1_ms": roundtrip,
        "roundtrip_prefork_1_ms": {**roundtrip, "samples_ms": [9.0] * 10},
        "throughput": {
            "pool": "prefork",
            "concurrency": 8,
            "clients": 64,
            "tasks": 300,
            "elapsed_s": 2.0,
            "failures": [f"TimeoutError: {i}" for i in range(7)],
            "worker_cpu_ms_per_task": 4.0,
            "redis_cpu_ms_per_task": 0.4,
            "caller_cpu_ms_per_task": 2.6,
        },
    }
    out = celery_figures(raw)
    solo = out["roundtrip_solo_1_ms"]
    assert solo == {**percentiles(samples), "caller_cpu_ms_per_call": 2.5, "worker_cpu_ms_per_call": 3.0}
    assert out["roundtrip_prefork_1_ms"]["p50"] == 9.0
    assert out["throughput"] == {
        "pool": "prefork",
        "concurrency": 8,
        "clients": 64,
        "tasks": 300,
        "seconds": 2.0,
        "tasks_per_s": 150.0,
        "failures": 7,
        "first_failures": [f"TimeoutError: {i}" for i in range(5)],
        "worker_cpu_ms_per_task": 4.0,
        "redis_cpu_ms_per_task": 0.4,
        "caller_cpu_ms_per_task": 2.6,
    }
