"""Prometheus metrics as an operator scrapes them: counters, histograms and gauges named by the
conventions (`_total`, `_seconds`, `_bucket`), moving with what the cloud did."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Cloud


def scrape(cloud: Cloud) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics: (name, sorted labels) -> value."""
    text = httpx.get(f"{cloud.url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_task_counters_and_histograms_move(cloud: Cloud) -> None:
    before = scrape(cloud)
    cloud.run(type="shell", command="sleep 0.3")
    cloud.run(type="shell", command="exit 4")
    after = scrape(cloud)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tiangong_tasks_created_total", type="shell") == 2
    assert grew("tiangong_tasks_finished_total", type="shell", status="success") == 1
    assert grew("tiangong_tasks_finished_total", type="shell", status="failed") == 1
    assert grew("tiangong_task_duration_seconds_count", type="shell") == 2
    # The sleeping task alone took 0.3 s on its agent.
    assert grew("tiangong_task_duration_seconds_sum", type="shell") >= 0.3
    assert grew("tiangong_task_duration_seconds_bucket", type="shell", le="0.1") <= 1
    assert grew("tiangong_task_claim_wait_seconds_count", type="shell") == 2


def test_log_bytes(cloud: Cloud) -> None:
    before = value(scrape(cloud), "tiangong_log_bytes_total")
    cloud.run(type="shell", command="seq 1 1000")  # 3,893 bytes of text with newlines
    assert value(scrape(cloud), "tiangong_log_bytes_total") - before >= 3893


def test_queue_depth_per_agent_and_upload_bytes(cloud: Cloud) -> None:
    idle = cloud.scripted("metrics-idle")  # registered and online, but it never claims
    agent_id = idle.headers["X-Agent-Id"]
    idle.close()
    for _ in range(3):
        r = cloud.create(agent_id=agent_id, type="shell", command="true")
        assert r.status_code == 201, r.text
    assert value(scrape(cloud), "tiangong_agent_queue_depth", agent=agent_id) == 3

    before = value(scrape(cloud), "tiangong_file_upload_bytes_total")
    content = b"x" * 12345
    for _ in range(2):  # the second is deduplicated, and its bytes still arrived
        assert cloud.http.post("/api/v1/files", files={"file": ("m.bin", content)}).status_code in (200, 201)
    after = scrape(cloud)
    assert value(after, "tiangong_file_upload_bytes_total") - before == 2 * len(content)
    assert value(after, "tiangong_file_uploads_total", outcome="deduplicated") >= 1


def test_a_fleet_run_counts_its_parent_and_children_created_as_they_finish(cloud: Cloud) -> None:
    """tasks_created and tasks_finished count the same tasks: a run's parent and each child it started."""
    before = scrape(cloud)
    body = {"agent_selector": {"ids": ["local"]}, "type": "python", "command": "print(1)", "sync": True}
    r = cloud.http.post("/api/v1/tasks", json={**body, "timeout": 60})
    assert r.status_code == 201 and r.json()["status"] == "success", r.text
    after = scrape(cloud)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tiangong_tasks_finished_total", type="python", status="success") == 2
    assert grew("tiangong_tasks_created_total", type="python") == 2
