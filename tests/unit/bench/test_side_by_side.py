"""How bench/side_by_side.py sums up each build's round trips and compares the two."""

from __future__ import annotations

from bench.side_by_side import ratios, summary


def test_a_builds_figures_are_its_percentiles_and_cpu_per_call() -> None:
    figures = summary([float(ms) for ms in range(1, 101)], {"cloud": 150.0, "agent": 100.0})
    assert figures == {
        "p50": 50.5,
        "p95": 95.05,
        "p99": 99.01,
        "n": 100,
        "cloud_cpu_ms_per_call": 1.5,
        "agent_cpu_ms_per_call": 1.0,
    }


def test_ratios_are_the_other_build_over_the_base() -> None:
    base = {"p50": 4.0, "p95": 8.0, "n": 100, "cloud_cpu_ms_per_call": 2.0, "agent_cpu_ms_per_call": 0.0}
    other = {"p50": 3.0, "p95": 8.0, "n": 100, "cloud_cpu_ms_per_call": 1.0, "agent_cpu_ms_per_call": 0.5}
    # The call count is no figure to compare; a base figure of 0 gives no ratio rather than a division error.
    assert ratios(base, other) == {"p50": 0.75, "p95": 1.0, "cloud_cpu_ms_per_call": 0.5}
