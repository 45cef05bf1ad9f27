"""HTTP claims' watches (cloud.api.agent_calls.ClaimWatches): one subscription per agent, kept between its
claims so no wake-up is missed, closed once the agent stops claiming."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from cloud.api.agent_calls import ClaimWatches
from cloud.hub import Hub


def _app(hub: Hub) -> Any:
    return SimpleNamespace(hub=hub, db=SimpleNamespace(notifies=False), settings=SimpleNamespace())


def test_a_wake_up_between_two_claims_is_kept_for_the_next() -> None:
    async def scenario() -> bool:
        hub = Hub()
        watches = ClaimWatches(_app(hub), keep_seconds=60)
        with watches.borrowed("a") as watch:
            assert watch is not None
            watch.read(0.0, more=False)  # the claim found the queue empty
        hub.publish(["agent:a"])  # a task created while no claim is in flight
        with watches.borrowed("a") as again:
            return again is watch and again.must_read(1.0)

    assert asyncio.run(scenario())


def test_a_second_claim_in_flight_goes_without_a_watch() -> None:
    async def scenario() -> tuple[bool, bool]:
        watches = ClaimWatches(_app(Hub()), keep_seconds=60)
        with watches.borrowed("a") as first, watches.borrowed("a") as second:
            return first is not None, second is None

    assert asyncio.run(scenario()) == (True, True)


def test_an_agent_that_stopped_claiming_leaves_no_subscription() -> None:
    async def scenario() -> set[str]:
        hub = Hub()
        watches = ClaimWatches(_app(hub), keep_seconds=0.05)
        with watches.borrowed("gone"):
            pass
        await asyncio.sleep(0.1)
        with watches.borrowed("busy"):  # any later claim closes the watches kept too long
            pass
        return set(hub._subs)

    assert asyncio.run(scenario()) == {"agent:busy"}
