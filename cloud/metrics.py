"""Prometheus metrics at GET /metrics: counts read from the database at scrape time (so every replica
reports the same totals), plus this process's own counters and histograms (each replica counts what it did:
sum them over replicas), fed by what committed transactions observed (cloud.db.events.observe)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select

from cloud.db.engine import Database
from cloud.db.models import AGENTS as A
from cloud.db.models import FILES as F
from cloud.db.models import TASKS as T
from cloud.services.agents import is_online
from wire.tasks import TaskStatus

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
"""Seconds: from a `true` (milliseconds) to an hour-long deploy."""


_ACTIVE = tuple(s.value for s in TaskStatus if not s.is_final)
"""Pending and running: few at any time, counted at every scrape."""


class _DatabaseCollector(Collector):
    def __init__(self, db: Database, offline_after: float, final_counts_seconds: float) -> None:
        self.db = db
        self.offline_after = offline_after
        self.final_counts_seconds = final_counts_seconds
        self._final: tuple[float, list[tuple[str, str, int]]] | None = None

    def _task_counts(self, conn: Connection) -> list[tuple[str, str, int]]:
        """Tasks by status and type. Pending and running ones are counted at every scrape (an index range);
        the finished ones, which grow with the retention period (a count over a million rows took 0.66 s
        on SQLite), at most every `final_counts_seconds`, and the last count is reported meanwhile."""
        by = (T.c.status, T.c.type)
        active = conn.execute(select(*by, func.count()).where(T.c.status.in_(_ACTIVE)).group_by(*by))
        now = time.monotonic()
        if self._final is None or now - self._final[0] >= self.final_counts_seconds:
            final = conn.execute(select(*by, func.count()).where(T.c.status.not_in(_ACTIVE)).group_by(*by))
            self._final = (now, [(s, t, int(n)) for s, t, n in final])
        return [(s, t, int(n)) for s, t, n in active] + self._final[1]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tasks = GaugeMetricFamily("tiangong_tasks", "Tasks by status and type.", labels=["status", "type"])
        agents = GaugeMetricFamily("tiangong_agents", "Agents by liveness.", labels=["status"])
        queued = GaugeMetricFamily(
            "tiangong_agent_queue_depth", "Pending tasks per agent (queued, not claimed yet).", labels=["agent"]
        )
        files = GaugeMetricFamily("tiangong_files", "Stored files (distinct contents).")
        file_bytes = GaugeMetricFamily("tiangong_file_bytes", "Bytes of stored file contents.")
        # Reads only, not db.transaction(): this runs in a worker thread, and the hub that transaction()
        # publishes to belongs to the event loop's thread.
        with self.db.reading() as conn:
            for status, type_, n in self._task_counts(conn):
                tasks.add_metric([status, type_], n)
            seen = [row.last_seen_at for row in conn.execute(select(A.c.last_seen_at))]
            for agent_id, n in conn.execute(
                select(T.c.agent_id, func.count()).where(T.c.status == TaskStatus.pending.value).group_by(T.c.agent_id)
            ):
                queued.add_metric([agent_id], n)
            n_files, size = conn.execute(select(func.count(), func.coalesce(func.sum(F.c.size), 0))).one()
        online = sum(1 for s in seen if is_online(s, self.offline_after))
        agents.add_metric(["online"], online)
        agents.add_metric(["offline"], len(seen) - online)
        files.add_metric([], n_files)
        file_bytes.add_metric([], size)
        yield from (tasks, agents, queued, files, file_bytes)


class Metrics:
    """One registry per app (tests start several apps in one process)."""

    def __init__(self, db: Database, offline_after: float, final_counts_seconds: float = 60.0) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_DatabaseCollector(db, offline_after, final_counts_seconds))
        self.file_downloads = Counter(
            "tiangong_file_downloads",
            "File contents served (agents fetching task files, callers).",
            registry=self.registry,
        )
        self.uploads = Counter(
            "tiangong_file_uploads", "Uploads received, by outcome.", ["outcome"], registry=self.registry
        )
        self.upload_bytes = Counter(
            "tiangong_file_upload_bytes", "Bytes of uploads received (deduplicated ones too).", registry=self.registry
        )
        self.created = Counter("tiangong_tasks_created", "Tasks created, by type.", ["type"], registry=self.registry)
        self.finished = Counter(
            "tiangong_tasks_finished",
            "Tasks that ended, by type and final status.",
            ["type", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "tiangong_task_duration_seconds",
            "From start on the agent to the end, of tasks that ended, by type.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.claim_wait = Histogram(
            "tiangong_task_claim_wait_seconds",
            "From creation to an agent's claim (first attempts), by type.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.log_bytes = Counter(
            "tiangong_log_bytes", "Log text stored (UTF-8 bytes, with newlines).", registry=self.registry
        )
        db.observers.append(self.observe)

    def observe(self, observed: list[tuple[str, Any]]) -> None:
        """Count what a committed transaction did (cloud.db.events.observe)."""
        for kind, row in observed:
            if kind == "task.created":
                self.created.labels(type=row.type).inc()
            elif kind == "task.claimed":
                # A first attempt only: a retry's wait would include its earlier attempts and backoff.
                if row.attempts == 1 and row.started_at is not None:
                    self.claim_wait.labels(type=row.type).observe(_seconds(row.started_at, row.created_at))
            elif kind == "task.finished":
                self.finished.labels(type=row.type, status=row.status).inc()
                if row.started_at is not None and row.finished_at is not None:
                    self.duration.labels(type=row.type).observe(_seconds(row.finished_at, row.started_at))
            elif kind == "log.stored":
                self.log_bytes.inc(row)


def _seconds(later: Any, earlier: Any) -> float:
    return max(0.0, float((later - earlier).total_seconds()))
