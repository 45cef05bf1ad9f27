"""The cloud keeps max_log_bytes (10 MiB) of an attempt's output itself, whatever an agent sends, and
stores any text an agent sends: a NUL character (which PostgreSQL refuses in text) becomes U+FFFD."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Cloud

MIB = 1024 * 1024
CAP = 10 * MIB  # the cloud's default max_log_bytes
SLACK = 64 * 1024  # cloud.services.logs.LOG_SLACK_BYTES: room for an agent's own marker and notes


@pytest.fixture
def agent(cloud: Cloud, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """An agent spoken by hand, which keeps no cap of its own."""
    with contextlib.closing(cloud.scripted(f"uncapped-{request.node.name}", ["shell"], timeout=120)) as client:
        yield client


def claim(cloud: Cloud, agent: httpx.Client) -> dict[str, Any]:
    agent_id = agent.headers["X-Agent-Id"]
    created = cloud.create(agent_id=agent_id, type="shell", command="true")
    assert created.status_code == 201, created.text
    [assigned] = agent.post(f"/api/v1/agents/{agent_id}/claim", json={"capacity": 1, "wait_s": 0}).json()
    return dict(assigned)


def utf8(text: str) -> int:
    return len(text.encode())


def test_30_mb_of_result_and_log_lines_are_cut_to_the_cap(cloud: Cloud, agent: httpx.Client) -> None:
    a = claim(cloud, agent)
    url, token = f"/api/v1/agent/tasks/{a['id']}/logs", a["task_token"]
    # 30 MiB of log lines, in batches of 3 MiB (a body the cloud takes), 1 KiB a line with its newline.
    per_batch, batches = 3 * 1024, 10
    for b in range(batches):
        lines = [{"seq": b * per_batch + i + 1, "message": f"{b:02d}-{i:05d}-" + "x" * 1013} for i in range(per_batch)]
        r = agent.post(url, json={"task_token": token, "lines": lines})
        # Every line counts, stored or dropped: the agent is never asked to resend.
        assert r.status_code == 200 and r.json() == {"next_seq": (b + 1) * per_batch + 1}, r.text
    total = per_batch * batches
    result = "head" + "r" * (30 * MIB) + "tail"
    report = {"task_token": token, "status": "success", "exit_code": 0, "result": result, "log_lines": total}
    r = agent.post(f"/api/v1/agent/tasks/{a['id']}/result", json=report)
    assert r.status_code == 200, r.text

    task = cloud.task(a["id"])
    assert task["status"] == "success"
    kept = task["result"]
    marker = f"[tiangong: {utf8(result) - CAP} bytes of output dropped; kept the first and last {CAP // 2} bytes]"
    assert kept == result[: CAP // 2] + "\n" + marker + "\n" + result[-CAP // 2 :]
    assert kept.startswith("head") and kept.endswith("tail")

    logs = cloud.logs(a["id"])
    stored = sum(utf8(ln["message"]) + 1 for ln in logs)
    dropping = [ln for ln in logs if ln["stream"] == "system"]
    assert len(dropping) == 1 and "max_log_bytes" in dropping[0]["message"]
    assert stored <= CAP + SLACK + utf8(dropping[0]["message"]) + 1
    assert stored >= CAP  # everything up to the cap was kept
    assert [ln["seq"] for ln in logs] == list(range(1, len(logs) + 1))  # the first lines, in order
    assert dropping[0] == logs[-1] and f"from seq {len(logs)} on" in dropping[0]["message"]
    # A resend of the same result is still accepted: the seq accounting holds.
    assert agent.post(f"/api/v1/agent/tasks/{a['id']}/result", json=report).status_code == 200


def test_a_real_agents_capped_output_is_stored_whole(cloud: Cloud) -> None:
    """The agent keeps the first and last 5 MiB and a marker; the cloud must not cut that again."""
    task = cloud.run(type="shell", command="head -c 12000000 /dev/zero | tr '\\0' a | fold -w 999", timeout=120)
    assert task["status"] == "success" and task["data"]["truncated"] is True
    assert task["result"].count("bytes of output dropped") == 1
    assert CAP - 2 * 1000 < utf8(task["result"]) <= CAP + 200  # whole lines: up to one less at each end
    logs = cloud.logs(task["id"])
    markers = [ln for ln in logs if ln["stream"] == "system"]
    assert len(markers) == 1 and "bytes of output dropped" in markers[0]["message"]  # the agent's, not the cloud's
    assert logs[-1]["message"] == "a" * (12_000_000 % 999 or 999)


def test_nul_characters_are_stored_as_the_replacement_character(cloud: Cloud, agent: httpx.Client) -> None:
    a = claim(cloud, agent)
    token = a["task_token"]
    lines = [{"seq": 1, "message": "a\x00b"}]
    assert (
        agent.post(f"/api/v1/agent/tasks/{a['id']}/logs", json={"task_token": token, "lines": lines}).status_code == 200
    )
    report = {
        "task_token": token,
        "status": "failed",
        "exit_code": 1,
        "result": "out\x00put",
        "error": "bad\x00error",
        "data": {"k\x00ey": ["v\x00al"]},
        "log_lines": 2,
        "lines": [{"seq": 2, "message": "\x00"}],
    }
    r = agent.post(f"/api/v1/agent/tasks/{a['id']}/result", json=report)
    assert r.status_code == 200, r.text
    task = cloud.task(a["id"])
    assert (task["result"], task["error"]) == ("out\ufffdput", "bad\ufffderror")
    assert task["data"] == {"k\ufffdey": ["v\ufffdal"]}
    assert [ln["message"] for ln in cloud.logs(a["id"])] == ["a\ufffdb", "\ufffd"]
    real = cloud.run(type="shell", command="printf 'x\\0y\\n'")
    assert real["result"] == "x\ufffdy\n"
    assert [ln["message"] for ln in cloud.logs(real["id"])] == ["x\ufffdy"]
