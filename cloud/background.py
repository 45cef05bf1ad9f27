"""Background passes of a cloud process: expired leases, undelivered tasks, retries that came due, old
audit records; in loops of their own, schedules that came due and fleet runs' next children; and, less
often, in a worker thread, the retention pass deleting old finished tasks (cloud.services.retention).

With several replicas on PostgreSQL each pass runs in one of them only (Database.lead); every change it
makes is a compare-and-set anyway, so a task that just succeeded is never reaped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta

from cloud.db.engine import Database
from cloud.db.types import utcnow
from cloud.hub import Hub
from cloud.services import audit, fleet
from cloud.services.retention import Pruned, cutoff, prune_batch
from cloud.services.retries import announce_due_retries, expire_undelivered
from cloud.services.runs import reap_expired
from cloud.services.scheduler import Firing, due, fire

log = logging.getLogger("tiangong.cloud")


def run_pass(db: Database, since_seconds: float, audit_days: int = 90) -> None:
    """One pass; `since_seconds` back is where the last one looked for retries coming due (with some
    overlap: waking an agent twice costs one empty claim). Every replica first re-reads the database's
    clock, which its own lease and expiry decisions follow."""
    db.sync_clock()
    with db.transaction() as conn:
        if not db.lead(conn):
            return
        now = utcnow()
        reaped = reap_expired(conn)
        expired = expire_undelivered(conn, now)
        announce_due_retries(conn, now - timedelta(seconds=since_seconds), now)
        pruned = audit.prune(conn, audit_days)
    if reaped:
        log.warning("background: %d task(s) whose agent was lost failed or were retried", reaped)
    if expired:
        log.warning("background: %d task(s) not delivered in time", expired)
    if pruned:
        log.info("background: %d audit record(s) older than %d days deleted", pruned, audit_days)


async def background_forever(db: Database, interval: float, audit_days: int = 90) -> None:
    """The background pass every `interval` seconds until canceled."""
    while True:
        try:
            # In the loop's thread, as the requests' transactions are: the hub is not thread-safe.
            run_pass(db, 2 * interval + 1, audit_days)
        except Exception:
            log.exception("background: pass failed; retrying")
        await asyncio.sleep(interval)


SCHEDULER_BATCH = 100
"""Firings per pass; when more are due the next pass follows at once."""


def run_scheduler_pass(db: Database, firing: Firing, batch: int = SCHEDULER_BATCH) -> int:
    """Fire every schedule that came due, each in a transaction of its own. Every
    replica runs it: the compare-and-set on the schedule row decides which one fires each run. Returns
    how many were handled without an error (a pass full of them is followed at once by another)."""
    with db.transaction() as conn:
        todo = due(conn, utcnow(), batch)
    handled = 0
    for schedule_id, planned in todo:
        try:
            with db.transaction() as conn:
                task = fire(conn, schedule_id, planned, utcnow(), firing)
        except Exception:
            log.exception("scheduler: firing schedule-%d failed; it is tried again next pass", schedule_id)
            continue
        handled += 1
        if task is not None:
            log.info("scheduler: schedule-%d fired task-%d", schedule_id, task.id)
    return handled


async def scheduler_forever(db: Database, firing: Firing, interval: float) -> None:
    """The scheduler pass every `interval` seconds (at once again when a pass was full) until canceled."""
    while True:
        full = False
        try:
            # In the loop's thread, as the requests' transactions are: the hub is not thread-safe.
            full = run_scheduler_pass(db, firing) >= SCHEDULER_BATCH
        except Exception:
            log.exception("scheduler: pass failed; retrying")
        await asyncio.sleep(0 if full else interval)


def run_fleet_pass(db: Database, launcher: fleet.Launcher) -> int:
    """Move every unfinished fleet run on (start children into free slots, end the runs that are done),
    each in a transaction of its own. Every replica runs it: the compare-and-set on the parent decides
    which one starts each child. Returns how many runs changed."""
    with db.transaction() as conn:
        runs = fleet.active_runs(conn)
    changed = 0
    for run_id in runs:
        try:
            with db.transaction() as conn:
                changed += fleet.advance(conn, run_id, launcher)
        except Exception:
            log.exception("fleet: task-%d could not be moved on; it is tried again next pass", run_id)
    return changed


async def fleet_forever(db: Database, hub: Hub, launcher: fleet.Launcher, interval: float) -> None:
    """The fleet pass whenever a child ends (the `fleet` wake-up, from any replica), and every `interval`
    seconds in case a wake-up was lost, until canceled."""
    # Ends when the hub closes (the cloud stopping): a cancel that lands as a wake-up does may be lost
    # inside the wait (asyncio.wait_for before Python 3.12), and a closed hub wakes every wait at once.
    while not hub.closing:
        # Subscribed before the pass reads: a child ending meanwhile wakes the next one at once.
        with hub.subscribe(fleet.FLEET_KEY) as sub:
            try:
                # In the loop's thread, as the requests' transactions are: the hub is not thread-safe.
                run_fleet_pass(db, launcher)
            except Exception:
                log.exception("fleet: pass failed; retrying")
            await sub.wait(interval)


def retention_pass(db: Database, days: int, batch: int, stop: threading.Event | None = None) -> Pruned:
    """Delete finished tasks that ended more than `days` ago, with their logs, a batch per transaction,
    until none is left or `stop` is set. After each batch it pauses as long as the batch took, so other
    writers (SQLite has one at a time) always get their turn; with several replicas each batch runs in
    the replica that holds the background lock (a batch is idempotent anyway)."""
    total = Pruned()
    before = cutoff(days)
    while stop is None or not stop.is_set():
        started = time.monotonic()
        # Not db.transaction(): this runs in a worker thread, and deleting finished tasks wakes no one.
        with db.engine.begin() as conn:
            if not db.lead(conn):
                break
            step = prune_batch(conn, before, batch)
        total.tasks, total.log_rows = total.tasks + step.tasks, total.log_rows + step.log_rows
        if not step.more:
            break
        time.sleep(time.monotonic() - started)
    return total


async def retention_forever(db: Database, days: int, interval: float, batch: int) -> None:
    """The retention pass every `interval` seconds, in a worker thread (a backlog of a million tasks takes
    minutes, in short transactions), until canceled; nothing when `days` is 0 (keep forever)."""
    if days <= 0:
        return
    stop = threading.Event()
    try:
        while True:
            try:
                pruned = await asyncio.to_thread(retention_pass, db, days, batch, stop)
                if pruned.tasks or pruned.log_rows:
                    log.info(
                        "retention: %d finished task(s) older than %d days deleted, with %d log row(s)",
                        pruned.tasks,
                        days,
                        pruned.log_rows,
                    )
            except Exception:
                log.exception("retention: pass failed; retrying")
            await asyncio.sleep(interval)
    finally:
        stop.set()  # a batch under way in the thread ends; no other begins
