"""A claim never hands out more tasks than its capacity, also while other claims of the same agent run
at once (a pool of processes, a result's piggybacked claim beside the claim loop's long-poll)."""

from __future__ import annotations

import threading

from cryptography.fernet import Fernet

from cloud.db.engine import Database
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache
from cloud.services.runs import claim_tasks
from cloud.services.tasks import create_task
from wire.tasks import TaskCreate

SEALER = Sealer([Fernet.generate_key()])
TASKS, CLAIMERS, ROUNDS = 300, 6, 40


def test_concurrent_claims_of_capacity_one_get_one_task_each(db: Database) -> None:
    """On PostgreSQL, `id IN (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED)` re-ran its subquery for rows a
    concurrent claim had changed, and one claim of capacity 1 took every pending task (the agent then ran
    more than max_concurrency, or dropped what it had no slot for)."""
    with db.transaction() as conn:
        for _ in range(TASKS):
            req = TaskCreate(agent_id="a1", type="shell", command="true")
            create_task(conn, req, agents=AgentCache(), offline_after=60, sealer=SEALER)
    sizes: list[int] = []
    claimed: list[str] = []

    def claimer() -> None:
        for _ in range(ROUNDS):
            with db.transaction() as conn:
                got = claim_tasks(conn, "a1", 1, lease_seconds=30, max_log_bytes=1 << 20, sealer=SEALER)
            sizes.append(len(got))
            claimed.extend(a.id for a in got)

    threads = [threading.Thread(target=claimer) for _ in range(CLAIMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(sizes) == 1
    assert len(claimed) == len(set(claimed)) == min(TASKS, CLAIMERS * ROUNDS)
