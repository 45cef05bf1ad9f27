"""The backoff before an automatic retry: exponential growth, jitter in the upper half, an upper cap."""

from __future__ import annotations

import pytest

from cloud.services.retries import MAX_BACKOFF_SECONDS, backoff_seconds

SAMPLES = 500


@pytest.mark.parametrize("base", [0.1, 5.0])
def test_backoff_doubles_per_retry_used_with_jitter_in_the_upper_half(base: float) -> None:
    for used in range(6):
        full = base * 2**used
        got = [backoff_seconds(base, used) for _ in range(SAMPLES)]
        assert all(full / 2 <= d <= full for d in got), (used, min(got), max(got))
        # Jitter: spread over the band, not one value (P(all in one narrow slice) is negligible).
        assert len(set(got)) > SAMPLES * 0.9
        assert min(got) < full * 0.6 and max(got) > full * 0.9


def test_backoff_is_capped_at_an_hour_even_after_many_retries() -> None:
    for used in (12, 30, 1000):
        got = [backoff_seconds(5.0, used) for _ in range(SAMPLES)]
        assert all(MAX_BACKOFF_SECONDS / 2 <= d <= MAX_BACKOFF_SECONDS for d in got)


def test_a_zero_base_retries_at_once() -> None:
    assert backoff_seconds(0.0, 3) == 0.0
