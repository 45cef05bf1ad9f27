"""Claims parked on this replica, waiting for their agent's next task, so that a create can hand the task over
in its own transaction.

Without it a sync round trip's task took two commits before its agent saw it: the create's, then, once
the create's wake-up reached the waiting claim, the claim's own read and UPDATE. A create on the replica
where one of the agent's claims waits now claims the agent's pending tasks (the new one among them) for
that claim in the create's transaction: one commit, and the claim answers as soon as it wakes. A claim
waiting on another replica, or none at all, is woken as before (cloud.api.agent_calls.claim).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloud.access import Principal
from wire.tasks import Assignment


@dataclass(eq=False)
class WaitingClaim:
    """One claim between two reads of its agent's queue (the last one found fewer tasks than it could take)."""

    agent_id: str
    capacity: int
    claimer: str
    recheck: Callable[[], Principal]
    """The claim's token resolved again: a revoked one is handed nothing."""
    job: asyncio.Task[Any]
    handed: list[Assignment] | None = None
    """Tasks a create claimed for it, set when that create's transaction commits."""
    inserted: str | None = None
    """The id of the task that create inserted."""

    def hand(self, tasks: list[Assignment], inserted: str) -> None:
        self.handed, self.inserted = tasks, inserted


class WaitingClaims:
    """This replica's waiting claims by agent, oldest first. Used from the event loop's thread only."""

    def __init__(self) -> None:
        self._by_agent: dict[str, list[WaitingClaim]] = {}
        self._unanswered: dict[str, list[tuple[float, Assignment]]] = {}
        """Tasks handed to a claim canceled before it could answer (its agent hung up, or its channel closed,
        in the same pass of the loop as the create's commit), with when: for the agent's next claim here."""

    def keep(self, agent_id: str, tasks: list[Assignment], now: float, max_age: float) -> None:
        """Tasks handed to a claim that was canceled before it answered: running, leased, and nobody has them.
        What any agent's claims left kept longer than `max_age` goes now: an agent that never claims again here
        (deleted, or moved to another replica) must not hold its entries for the process's life."""
        for other, entries in list(self._unanswered.items()):
            if not entries or entries[-1][0] <= now - max_age:  # its newest is too old: all are
                del self._unanswered[other]
        if tasks:
            self._unanswered.setdefault(agent_id, []).extend((now, task) for task in tasks)

    def kept(self, agent_id: str, capacity: int, now: float, max_age: float) -> list[Assignment]:
        """Up to `capacity` of the agent's kept tasks, oldest first; those kept longer than `max_age` are dropped
        (their lease is running out: the lease's expiry retries or fails them, as for any lost answer)."""
        entries = self._unanswered.pop(agent_id, None)
        if not entries:
            return []
        fresh = [(at, task) for at, task in entries if now - at < max_age]
        if len(fresh) > capacity:
            self._unanswered[agent_id] = fresh[capacity:]
        return [task for _, task in fresh[:capacity]]

    def park(self, claim: WaitingClaim) -> None:
        self._by_agent.setdefault(claim.agent_id, []).append(claim)

    def leave(self, claim: WaitingClaim) -> None:
        """The claim stopped waiting (woken, timed out, canceled); a no-op once a create took it."""
        waiting = self._by_agent.get(claim.agent_id)
        if waiting is not None and claim in waiting:
            waiting.remove(claim)
            if not waiting:
                del self._by_agent[claim.agent_id]

    def take(self, agent_id: str) -> WaitingClaim | None:
        """The agent's oldest claim still waiting, removed: it gets one create's tasks at most. A claim whose
        request is being canceled (its agent hung up) is passed over: nobody would read what it is handed."""
        waiting = self._by_agent.get(agent_id)
        while waiting:
            claim = waiting.pop(0)
            if not claim.job.done() and not claim.job.cancelling():
                if not waiting:
                    del self._by_agent[agent_id]
                return claim
        self._by_agent.pop(agent_id, None)
        return None
