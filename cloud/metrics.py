"""Prometheus metrics at GET /metrics: counts read from the database at scrape time (so every replica
reports the same totals), plus this process's own counters."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from cloud.db.engine import Database
from cloud.db.models import AGENTS as A
from cloud.db.models import FILES as F
from cloud.db.models import TASKS as T
from cloud.services.agents import is_online


class _DatabaseCollector(Collector):
    def __init__(self, db: Database, offline_after: float) -> None:
        self.db = db
        self.offline_after = offline_after

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tasks = GaugeMetricFamily("tiangong_tasks", "Tasks by status and type.", labels=["status", "type"])
        agents = GaugeMetricFamily("tiangong_agents", "Agents by liveness.", labels=["status"])
        files = GaugeMetricFamily("tiangong_files", "Stored files (distinct contents).")
        file_bytes = GaugeMetricFamily("tiangong_file_bytes", "Bytes of stored file contents.")
        with self.db.transaction() as conn:
            for status, type_, n in conn.execute(
                select(T.c.status, T.c.type, func.count()).group_by(T.c.status, T.c.type)
            ):
                tasks.add_metric([status, type_], n)
            seen = [row.last_seen_at for row in conn.execute(select(A.c.last_seen_at))]
            n_files, size = conn.execute(select(func.count(), func.coalesce(func.sum(F.c.size), 0))).one()
        online = sum(1 for s in seen if is_online(s, self.offline_after))
        agents.add_metric(["online"], online)
        agents.add_metric(["offline"], len(seen) - online)
        files.add_metric([], n_files)
        file_bytes.add_metric([], size)
        yield from (tasks, agents, files, file_bytes)


class Metrics:
    """One registry per app (tests start several apps in one process)."""

    def __init__(self, db: Database, offline_after: float) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_DatabaseCollector(db, offline_after))
        self.file_downloads = Counter(
            "tiangong_file_downloads",
            "File contents served (agents fetching task files, callers).",
            registry=self.registry,
        )
        self.uploads = Counter(
            "tiangong_file_uploads", "Uploads received, by outcome.", ["outcome"], registry=self.registry
        )
