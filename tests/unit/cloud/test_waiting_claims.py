"""Claims waiting on a replica (cloud.api.waiting): a create hands its task to one of them, and a task handed to
a claim canceled before it could answer goes to the agent's next claim instead of waiting out its lease."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from cloud.access import Principal
from cloud.api import agent_calls as calls
from cloud.api.waiting import WaitingClaims
from cloud.hub import Hub
from tests.unit.agent.harness import assignment
from wire.agents import ClaimRequest

SETTINGS = SimpleNamespace(claim_wait_max_seconds=30, recheck_seconds=1, idle_recheck_seconds=30, lease_seconds=30)


def _app() -> Any:
    return SimpleNamespace(hub=Hub(), db=SimpleNamespace(notifies=False), settings=SETTINGS, waiting=WaitingClaims())


async def _gone() -> bool:
    return False


def _not_checked() -> Principal:
    raise AssertionError("an HTTP claim's token is checked by its request")


def _claim(app: Any, watch: calls.ClaimWatch) -> Any:
    body = ClaimRequest(capacity=2, wait_s=30)
    return calls.claim(app, "a", body, "", recheck=_not_checked, gone=_gone, checked=True, watch=watch)


def test_tasks_handed_to_a_claim_canceled_before_it_answered_go_to_the_next_claim() -> None:
    async def scenario() -> tuple[bool, list[str]]:
        app = _app()
        watch = calls.ClaimWatch(app, "a")
        watch.read(0.0, more=False)  # the queue is known empty: the claim waits without reading
        first = asyncio.create_task(_claim(app, watch))
        await asyncio.sleep(0)  # it is waiting now
        waiting = app.waiting.take("a")
        assert waiting is not None
        waiting.hand([assignment("task-1")], "task-1")  # a create's commit handed it the task...
        app.hub.publish(["agent:a"])
        first.cancel()  # ...and its agent hung up in the same pass of the loop
        await asyncio.gather(first, return_exceptions=True)
        got = await asyncio.wait_for(_claim(app, watch), 5)  # the agent's next claim
        return first.cancelled(), [t.id for t in got]

    assert asyncio.run(scenario()) == (True, ["task-1"])


def test_kept_tasks_go_oldest_first_within_capacity_and_expire_with_their_lease() -> None:
    claims = WaitingClaims()
    claims.keep("a", [assignment("task-1"), assignment("task-2")], now=0.0, max_age=15.0)
    claims.keep("a", [assignment("task-3")], now=10.0, max_age=15.0)
    assert [t.id for t in claims.kept("a", 1, now=11.0, max_age=15.0)] == ["task-1"]
    assert [t.id for t in claims.kept("a", 5, now=20.0, max_age=15.0)] == ["task-3"]  # task-2 is too old
    assert claims.kept("a", 5, now=20.0, max_age=15.0) == []


def test_an_agent_that_never_claims_again_does_not_keep_its_entries() -> None:
    claims = WaitingClaims()
    claims.keep("gone", [assignment("task-1")], now=0.0, max_age=15.0)  # its agent was deleted meanwhile
    claims.keep("b", [assignment("task-2")], now=10.0, max_age=15.0)
    assert sorted(claims._unanswered) == ["b", "gone"]  # not too old yet (what the replica holds in memory)
    claims.keep("c", [assignment("task-3")], now=16.0, max_age=15.0)
    assert sorted(claims._unanswered) == ["b", "c"]
