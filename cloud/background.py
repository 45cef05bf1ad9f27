"""Background jobs of a cloud process: the lease reaper."""

from __future__ import annotations

import asyncio
import logging

from cloud.db.engine import Database
from cloud.services.runs import reap_expired

log = logging.getLogger("tiangong.cloud")


async def reap_forever(db: Database, interval: float) -> None:
    """Fail running tasks whose agent stopped heartbeating, every `interval` seconds."""
    while True:
        try:
            with db.transaction() as conn:
                n = reap_expired(conn)
            if n:
                log.warning("reaper: %d task(s) failed with 'agent lost'", n)
        except Exception:
            log.exception("reaper: pass failed; retrying")
        await asyncio.sleep(interval)
