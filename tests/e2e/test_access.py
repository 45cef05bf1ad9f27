"""Who may do what (issue 15): agent, registration and scoped API tokens against the real cloud and agent."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.harness import ADMIN, AGENT, REGISTER, ROOT, AgentClient, AgentProc, Cloud, wait_for


def client(cloud: Cloud, token: str) -> httpx.Client:
    return httpx.Client(base_url=cloud.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


Scripted = Callable[..., AgentClient]


@pytest.fixture
def scripted(cloud: Cloud) -> Iterator[Scripted]:
    """Registers scripted agents (online for agent_offline_seconds), each holding its own agent token."""
    made: list[AgentClient] = []

    def register(agent_id: str, **extra: Any) -> AgentClient:
        agent = AgentClient(cloud.url, timeout=30)
        made.append(agent)
        r = agent.post(REGISTER, json={"agent_id": agent_id, "executors": ["shell"], **extra})
        assert r.status_code == 200, r.text
        return agent

    yield register
    for agent in made:
        agent.close()


def token(cloud: Cloud, **body: Any) -> dict[str, Any]:
    r = cloud.http.post("/api/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def write_sql(cloud: Cloud, statement: str) -> None:
    """Change the cloud's database directly, committed (Cloud.sql only reads)."""
    args = {"timeout": 10} if cloud.database_url.startswith("sqlite") else {}
    engine = create_engine(cloud.database_url, connect_args=args)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_agent_tokens_act_for_their_own_agent_only(cloud: Cloud, scripted: Scripted) -> None:
    a, b = scripted("acc-a"), scripted("acc-b")
    tga_a, tga_b = a.headers["Authorization"][7:], b.headers["Authorization"][7:]
    assert tga_a.startswith("tga_") and tga_b.startswith("tga_") and tga_a != tga_b
    again = httpx.post(cloud.url + REGISTER, json={"agent_id": "acc-a"}, headers={"Authorization": f"Bearer {AGENT}"})
    assert again.status_code == 409 and "already registered" in again.json()["error"]
    own = a.post(REGISTER, json={"agent_id": "acc-a", "executors": ["shell"]})
    assert own.status_code == 200 and own.json()["agent_token"] is None
    assert b.post(REGISTER, json={"agent_id": "acc-a", "executors": ["shell"]}).status_code == 403

    task = cloud.create(agent_id="acc-a", type="shell", command="echo", params={"password": "pw-acc-9f3"}).json()
    assert b.post("/api/v1/agents/acc-a/claim", json={"wait_s": 0}).status_code == 403
    assert b.post("/api/v1/agents/acc-a/heartbeat", json={"running": [task["id"]]}).status_code == 403
    assert b.post("/api/v1/agents/acc-b/claim", json={"wait_s": 0}).json() == []
    [assigned] = a.post("/api/v1/agents/acc-a/claim", json={"wait_s": 0}).json()
    assert assigned["id"] == task["id"] and assigned["params"]["password"] == "pw-acc-9f3"
    # B holding A's task_token (a valid-looking one) still cannot write A's task.
    lines = [{"seq": 1, "stream": "stdout", "message": "forged"}]
    logs = b.post(f"/api/v1/agent/tasks/{task['id']}/logs", json={"task_token": assigned["task_token"], "lines": lines})
    assert logs.status_code == 403
    forged = {"task_token": assigned["task_token"], "status": "success", "result": "forged", "log_lines": 0}
    assert b.post(f"/api/v1/agent/tasks/{task['id']}/result", json=forged).status_code == 403
    assert cloud.task(task["id"])["status"] == "running" and cloud.logs(task["id"]) == []
    assert a.post(f"/api/v1/agent/tasks/{task['id']}/result", json=dict(forged, result="ok")).status_code == 200
    assert cloud.task(task["id"])["result"] == "ok"

    for other, code in ((AGENT, 403), (ADMIN, 403), ("tga_unknown", 401)):
        with client(cloud, other) as c:
            assert c.post("/api/v1/agents/acc-a/claim", json={"wait_s": 0}).status_code == code, other


def test_registration_tokens_scoped_single_use_expired_and_hashed(cloud: Cloud) -> None:
    web = token(cloud, name="reg web", kind="registration", agents=["reg-web-*"])
    once = token(cloud, name="reg once", kind="registration", single_use=True)
    late = token(cloud, name="reg late", kind="registration")
    assert [t["token"][:4] for t in (web, once, late)] == ["tgr_"] * 3
    issued = []
    for tok, agent_id, code, says in (
        (web["token"], "reg-db-1", 403, "may not register"),
        (web["token"], "reg-web-1", 200, ""),
        (once["token"], "reg-once-1", 200, ""),
        (once["token"], "reg-once-2", 403, "used up"),
    ):
        r = httpx.post(cloud.url + REGISTER, json={"agent_id": agent_id}, headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == code and says in r.text, (agent_id, r.text)
        if code == 200:
            issued.append(r.json()["agent_token"])
    assert cloud.http.get("/api/v1/agents/reg-db-1").status_code == 404
    # Not used before it expires, so no replica has it cached.
    write_sql(cloud, f"UPDATE credentials SET expires_at = created_at WHERE id = {late['id']}")
    r = httpx.post(
        cloud.url + REGISTER, json={"agent_id": "reg-late"}, headers={"Authorization": f"Bearer {late['token']}"}
    )
    assert r.status_code == 401 and "token expired" in r.text
    assert cloud.http.get(f"/api/v1/tokens/{late['id']}").json()["expired"] is True

    secrets = [web["token"], once["token"], late["token"], *issued]
    hashes = {row[0] for row in cloud.sql("SELECT token_hash FROM credentials")}
    assert {hashlib.sha256(s.encode()).hexdigest() for s in secrets} <= hashes
    dump = repr(cloud.sql("SELECT * FROM credentials"))
    assert not [s for s in secrets if s in dump or s[4:] in dump]
    if cloud.database_url.startswith("sqlite"):
        stored = b"".join(p.read_bytes() for p in cloud.data_dir.glob("tiangong.db*"))
        assert not [s for s in secrets if s[4:].encode() in stored]


def start_agent(cloud: Cloud, agent_id: str, data_dir: Any, tok: str, **env: str) -> AgentProc:
    """An agent process on a given data dir (as Cloud.agent starts one), stopped with the cloud."""
    cmd = [sys.executable, "-m", "cli.main", "agent", "--server", cloud.url, "--agent-id", agent_id]
    cmd += ["--max-concurrency", "1", "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**cloud.env, "TIANGONG_AGENT_TOKEN": tok, **env})
    handle = AgentProc(proc, agent_id, data_dir)
    cloud.agents.append(handle)
    return handle


def test_agent_process_keeps_its_token_across_restart_until_deleted(cloud: Cloud) -> None:
    reg = token(cloud, name="proc reg", kind="registration", agents=["proc-*"])
    first = cloud.agent("proc-1", max_concurrency=1, TIANGONG_AGENT_TOKEN=reg["token"])
    identity = first.data_dir / "identity.json"
    wait_for(identity.exists, 10, "identity.json")  # saved just after the registration the cloud shows
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    saved = json.loads(identity.read_text())["agent_token"]
    assert saved.startswith("tga_") and reg["token"] not in identity.read_text()
    first.stop()
    # The registration token is revoked: the restarted process must rely on its saved agent token.
    assert cloud.http.delete(f"/api/v1/tokens/{reg['id']}").status_code == 204
    second = start_agent(cloud, "proc-1", first.data_dir, reg["token"], TIANGONG_SHUTDOWN_GRACE_SECONDS="1")
    done = cloud.run(agent_id="proc-1", type="shell", command="echo after restart", timeout=30)
    assert done["status"] == "success" and done["result"] == "after restart\n"
    assert json.loads(identity.read_text())["agent_token"] == saved and second.proc.poll() is None

    running = cloud.create(agent_id="proc-1", type="shell", command="sleep 30").json()["id"]
    wait_for(lambda: cloud.task(running)["status"] == "running", 20, "sleep running")
    pending = cloud.create(agent_id="proc-1", type="shell", command="echo never").json()["id"]
    assert cloud.task(pending)["status"] == "pending"  # its one slot is taken
    assert cloud.http.delete("/api/v1/agents/proc-1").status_code == 204
    with client(cloud, saved) as c:
        assert c.post("/api/v1/agents/proc-1/heartbeat", json={"running": [running]}).status_code == 401
        assert c.post("/api/v1/agents/proc-1/claim", json={"wait_s": 0}).status_code == 401
    assert cloud.http.get("/api/v1/agents/proc-1").status_code == 404
    second.stop()  # its late report of the canceled sleep must not change the outcome
    for task_id in (running, pending):
        t = cloud.task(task_id)
        assert (t["status"], t["error"]) == ("failed", "agent deleted"), t
    back = httpx.post(cloud.url + REGISTER, json={"agent_id": "proc-1"}, headers={"Authorization": f"Bearer {AGENT}"})
    assert back.status_code == 200 and back.json()["agent_token"].startswith("tga_")


def test_disabled_agent_gets_and_accepts_no_task(cloud: Cloud, scripted: Scripted) -> None:
    agent = scripted("dis-1")
    queued = cloud.create(agent_id="dis-1", type="shell", command="echo queued").json()["id"]
    assert agent.patch("/api/v1/agents/dis-1", json={"disabled": False}).status_code == 403  # not its own admin
    r = cloud.http.patch("/api/v1/agents/dis-1", json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    refused = cloud.create(agent_id="dis-1", type="shell", command="echo no")
    assert refused.status_code == 409 and "disabled" in refused.json()["error"]
    assert agent.post("/api/v1/agents/dis-1/claim", json={"wait_s": 0}).json() == []
    assert cloud.http.patch("/api/v1/agents/dis-1", json={"disabled": False}).json()["disabled"] is False
    assert [t["id"] for t in agent.post("/api/v1/agents/dis-1/claim", json={"wait_s": 0}).json()] == [queued]
    actions = [e["action"] for e in cloud.http.get("/api/v1/audit", params={"target": "dis-1"}).json()["list"]]
    assert actions[:2] == ["agent.enable", "agent.disable"]


def test_scoped_api_token_reaches_only_its_agents_types_and_actions(cloud: Cloud, scripted: Scripted) -> None:
    for agent_id in ("web-1", "db-1"):
        scripted(agent_id, executors=["shell", "python"])
    ci = token(cloud, name="ci", agents=["web-*"], types=["shell"], can=["create", "read"])
    assert ci["token"].startswith("tgp_") and ci["last_used_at"] is None
    db_task = cloud.create(agent_id="db-1", type="shell", command="echo db").json()["id"]
    with client(cloud, ci["token"]) as c:
        mine = c.post("/api/v1/tasks", json={"agent_id": "web-1", "type": "shell", "command": "echo web"})
        assert mine.status_code == 201, mine.text
        r = c.post("/api/v1/tasks", json={"agent_id": "db-1", "type": "shell", "command": "echo"})
        assert r.status_code == 403 and r.json()["error"] == "agent_id: token 'ci' does not reach agent 'db-1'"
        r = c.post("/api/v1/tasks", json={"agent_id": "web-1", "type": "python", "command": "print(1)"})
        assert r.status_code == 403 and r.json()["error"].startswith("type:") and "python" in r.json()["error"]
        assert c.post(f"/api/v1/tasks/{mine.json()['id']}/cancel").status_code == 403
        listed = c.get("/api/v1/tasks", params={"page_size": 100}).json()
        assert mine.json()["id"] in [t["id"] for t in listed["list"]]
        assert all(fnmatchcase(t["agent_id"], "web-*") for t in listed["list"]) and listed["total"] == len(
            listed["list"]
        )
        assert c.get(f"/api/v1/tasks/{db_task}").status_code == 403
        assert c.get(f"/api/v1/tasks/{db_task}/logs").status_code == 403
        with c.stream("GET", f"/api/v1/tasks/{db_task}/logs", params={"follow": "true"}) as sse:
            assert sse.status_code == 403
        agents = [a["id"] for a in c.get("/api/v1/agents").json()]
        assert "web-1" in agents and all(fnmatchcase(a, "web-*") for a in agents)
        assert c.get("/api/v1/tokens").status_code == 403
        assert c.get("/api/v1/audit").status_code == 403
        everyone = cloud.http.get("/api/v1/tokens")
        assert ci["token"] not in everyone.text and all("token" not in t for t in everyone.json())
        assert cloud.http.get(f"/api/v1/tokens/{ci['id']}").json()["last_used_at"] is not None
        assert cloud.http.delete(f"/api/v1/tokens/{ci['id']}").status_code == 204
        assert c.get("/api/v1/tasks").status_code == 401


def test_label_scoped_token_and_token_validation(cloud: Cloud, scripted: Scripted) -> None:
    scripted("lab-prod", labels={"env": "prod"})
    scripted("lab-dev", labels={"env": "dev"})
    ops = token(cloud, name="prod ops", labels={"env": "prod"}, types=["shell"], can=["create", "read"])
    with client(cloud, ops["token"]) as c:
        ok = c.post("/api/v1/tasks", json={"agent_id": "lab-prod", "type": "shell", "command": "echo"})
        assert ok.status_code == 201, ok.text
        assert (
            c.post("/api/v1/tasks", json={"agent_id": "lab-dev", "type": "shell", "command": "echo"}).status_code == 403
        )
        assert [a["id"] for a in c.get("/api/v1/agents").json()] == ["lab-prod"]
        assert c.get(f"/api/v1/tasks/{ok.json()['id']}").status_code == 200
    for body, names in (
        ({"name": "x", "can": []}, "can"),
        ({"name": "x", "types": ["*"], "can": ["read"]}, "agents"),
        ({"name": "x", "agents": ["*"], "types": ["*"], "can": ["launch"]}, "can"),
    ):
        r = cloud.http.post("/api/v1/tokens", json=body)
        assert r.status_code == 400 and names in r.json()["error"], r.text


def test_file_scopes_and_agent_file_reads(cloud: Cloud, scripted: Scripted) -> None:
    reader = token(cloud, name="reader", can=["files:read"])
    up = [cloud.http.post("/api/v1/files", files={"file": (f"f{i}.txt", f"access {i}\n".encode())}) for i in (1, 2)]
    assert [r.status_code for r in up] == [201, 201]
    f1, f2 = up[0].json()["id"], up[1].json()["id"]
    with client(cloud, reader["token"]) as c:
        assert c.post("/api/v1/files", files={"file": ("no.txt", b"no")}).status_code == 403
        assert c.delete(f"/api/v1/files/{f1}").status_code == 403
        assert f1 in [f["id"] for f in c.get("/api/v1/files", params={"page_size": 100}).json()["list"]]
        assert c.get(f"/api/v1/files/{f1}/content").content == b"access 1\n"
    agent = scripted("files-a")
    assert cloud.create(agent_id="files-a", type="shell", command="cat x", file_id=f1).status_code == 201
    got = agent.get(f"/api/v1/files/{f1}/content")
    assert got.status_code == 200 and got.content == b"access 1\n"
    assert agent.get(f"/api/v1/files/{f2}/content").status_code == 403
    assert agent.get(f"/api/v1/files/{f2}").status_code == 403
    assert agent.get("/api/v1/files").status_code == 403


def test_json_rpc_applies_the_same_scopes(cloud: Cloud, scripted: Scripted) -> None:
    agent = scripted("web-1")
    scripted("db-1")
    tok = token(cloud, name="ci rpc", agents=["web-*"], types=["shell"], can=["create", "read", "delete"])["token"]
    made = cloud.rpc("task_create_task", token=tok, target_uuid="web-1", task_type={"shell": {"command": "echo"}})
    n = made["result"]["id"]
    audited = cloud.http.get("/api/v1/audit", params={"target": f"task-{n}"}).json()["list"]
    assert [(e["actor"], e["action"]) for e in audited] == [("ci rpc", "task.create")]
    refusals: list[tuple[str, dict[str, Any]]] = [
        ("task_create_task", {"target_uuid": "db-1", "task_type": {"shell": {"command": "echo"}}}),
        ("task_query", {"task_data_query": {"condition": [{"type": "shell"}]}}),
        ("task_query", {"task_data_query": {"condition": [{"uuid": "db-1"}, {"type": "shell"}]}}),
        ("task_query", {"task_data_query": {"condition": [{"uuid": "web-1"}]}}),
        ("task_delete", {"conditions": [{"uuid": "web-1"}]}),
    ]
    for method, params in refusals:
        err = cloud.rpc(method, token=tok, **params)["error"]
        assert err["code"] == -32003 and err["message"].startswith("Forbidden:"), (method, params, err)
    rows = cloud.rpc("task_query", token=tok, task_data_query={"condition": [{"uuid": "web-1"}, {"type": "shell"}]})
    assert n in [r["task_id"] for r in rows["result"]] and {r["uuid"] for r in rows["result"]} == {"web-1"}
    deleted = cloud.rpc("task_delete", token=tok, conditions=[{"uuid": "web-1"}, {"type": "shell"}])
    assert deleted["result"]["success"] is True
    for bad in ("tgp_nope", agent.headers["Authorization"][7:], AGENT):
        assert cloud.rpc("task_query", token=bad)["error"]["code"] == -32001


def test_audit_names_who_did_what_and_holds_no_secret(cloud: Cloud, scripted: Scripted) -> None:
    scripted("web-1")
    gone = scripted("aud-gone")
    ci = token(cloud, name="ci", agents=["web-*"], types=["shell"], can=["create"])
    password = "pw-audit-7d1c"
    with client(cloud, ci["token"]) as c:
        r = c.post(
            "/api/v1/tasks",
            json={"agent_id": "web-1", "type": "shell", "command": "echo", "params": {"password": password}},
        )
        assert r.status_code == 201, r.text
        assert c.get("/api/v1/audit").status_code == 403
    task_id = r.json()["id"]
    assert cloud.http.delete("/api/v1/agents/aud-gone").status_code == 204
    by_ci = cloud.http.get("/api/v1/audit", params={"actor": "ci"}).json()["list"]
    assert {e["actor"] for e in by_ci} == {"ci"}
    [created] = [e for e in by_ci if e["target"] == task_id]
    assert created["action"] == "task.create"
    assert created["detail"] == {"agent_id": "web-1", "type": "shell", "token": f"token-{ci['id']}"}  # names repeat
    minted = cloud.http.get("/api/v1/audit", params={"action": "token.create", "target": f"token-{ci['id']}"}).json()
    assert [e["actor"] for e in minted["list"]] == ["admin"]
    dropped = cloud.http.get("/api/v1/audit", params={"action": "agent.delete", "target": "aud-gone"}).json()["list"]
    assert [e["actor"] for e in dropped] == ["admin"]
    for tok, code in ((gone.headers["Authorization"][7:], 401), (AGENT, 403), (ADMIN, 200)):
        with client(cloud, tok) as c:
            assert c.get("/api/v1/audit").status_code == code, tok
    pages, page = [], 1
    while True:
        body = cloud.http.get("/api/v1/audit", params={"page": page, "page_size": 100})
        pages.append(body.text)
        if page * 100 >= body.json()["total"]:
            break
        page += 1
    everything = "".join(pages)
    secrets = [ci["token"], gone.headers["Authorization"][7:], password, ADMIN, AGENT]
    assert not [s for s in secrets if s in everything]


def test_concurrent_registrations_hand_out_one_identity(cloud: Cloud) -> None:
    """Replicas starting at once with one registration token: one gets the id, and a single-use token
    registers one agent, on SQLite and PostgreSQL alike."""
    once = token(cloud, name="race once", kind="registration", single_use=True)["token"]

    def register(tok: str, agent_id: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {tok}"}
        return httpx.post(cloud.url + REGISTER, json={"agent_id": agent_id}, headers=headers, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        same_id = list(pool.map(lambda _: register(AGENT, "race-1"), range(8)))
        single = list(pool.map(lambda i: register(once, f"race-once-{i}"), range(8)))
    assert sorted(r.status_code for r in same_id) == [200] + [409] * 7, [r.text for r in same_id]
    assert sorted(r.status_code for r in single) == [200] + [403] * 7, [r.text for r in single]
    count = "SELECT count(*) FROM credentials WHERE kind = 'agent' AND agent_id = 'race-1'"
    assert cloud.sql(count) == [(1,)]


def test_deleted_agent_in_flight_claim_gets_nothing(cloud: Cloud, scripted: Scripted) -> None:
    """An admin deletes an agent (say, a compromised host) and the id is registered again elsewhere: the
    old process's claim long-poll, admitted before the delete, must not receive the new owner's tasks."""
    old = scripted("gone-1")
    seen = cloud.http.get("/api/v1/agents/gone-1").json()["last_seen_at"]
    with ThreadPoolExecutor(1) as pool:
        stale = pool.submit(old.post, "/api/v1/agents/gone-1/claim", json={"wait_s": 20})
        # The claim passed its token check and recorded the agent as seen: it is now waiting.
        wait_for(lambda: cloud.http.get("/api/v1/agents/gone-1").json()["last_seen_at"] != seen, 10, "claim waiting")
        assert cloud.http.delete("/api/v1/agents/gone-1").status_code == 204
        new = scripted("gone-1")  # the id registered again, e.g. on a new host
        task = cloud.create(agent_id="gone-1", type="shell", command="echo", params={"password": "pw-new-owner"})
        assert task.status_code == 201, task.text
        answer = stale.result(timeout=30)
    # The old token died with the agent while this claim waited: the claim must not get the new owner's task.
    assert answer.status_code != 200 or answer.json() == [], answer.text
    [mine] = new.post("/api/v1/agents/gone-1/claim", json={"wait_s": 0}).json()
    assert mine["id"] == task.json()["id"]


def test_a_registration_token_cannot_take_an_id_whose_token_was_issued_ahead(cloud: Cloud) -> None:
    issued = cloud.http.post("/api/v1/agents/acc-pool/tokens", json={"name": "pool secret"})
    assert issued.status_code == 201
    r = httpx.post(cloud.url + REGISTER, json={"agent_id": "acc-pool"}, headers={"Authorization": f"Bearer {AGENT}"})
    assert r.status_code == 409 and "already registered" in r.json()["error"]
    with AgentClient(cloud.url, token=issued.json()["token"]) as pool:  # the pool's own way in
        assert pool.post(REGISTER, json={"agent_id": "acc-pool"}).json()["agent_token"] is None
    for bad in ("*", "web-*", "a b", "x/y", "q?", "[a]", " lead"):
        r = httpx.post(cloud.url + REGISTER, json={"agent_id": bad}, headers={"Authorization": f"Bearer {AGENT}"})
        assert r.status_code == 400 and r.json()["error"].startswith("agent_id:"), bad
        issued = cloud.http.post(f"/api/v1/agents/{quote(bad, safe='')}/tokens", json={})
        assert issued.status_code in (400, 404), bad  # `x/y`: no such route
    longest = "l" * 128  # its token's name must still fit the database's column
    with AgentClient(cloud.url) as agent:
        assert agent.post(REGISTER, json={"agent_id": longest}).status_code == 200
    assert cloud.http.get(f"/api/v1/agents/{'l' * 129}").status_code == 400


def test_creating_needs_read_to_see_the_outcome_and_files_read_to_name_a_file(cloud: Cloud, scripted: Scripted) -> None:
    scripted("acc-cr-1")
    blind = token(cloud, name="blind", agents=["acc-cr-*"], types=["shell"], can=["create"])
    with client(cloud, blind["token"]) as c:
        r = c.post("/api/v1/tasks", json={"agent_id": "acc-cr-1", "type": "shell", "command": "id", "sync": True})
        assert r.status_code == 403 and "may not read" in r.json()["error"]
        body = {"agent_id": "acc-cr-1", "type": "shell", "command": "cat $TIANGONG_FILE", "file_id": "file-1"}
        r = c.post("/api/v1/tasks", json=body)
        assert r.status_code == 403 and "files:read" in r.json()["error"]
        keyed = {"agent_id": "acc-cr-1", "type": "shell", "command": "echo", "request_id": "acc-cr-key"}
        assert c.post("/api/v1/tasks", json=keyed).status_code == 201
        again = c.post("/api/v1/tasks", json=keyed)  # answers the earlier task: a read
        assert again.status_code == 403 and "may not read" in again.json()["error"]
    shell = {"shell": {"command": "id"}}
    called = cloud.rpc(
        "task_create_task_blocking", token=blind["token"], target_uuid="acc-cr-1", task_type=shell, timeout_ms=1000
    )
    assert called["error"]["code"] == -32003
    narrow = token(cloud, name="narrow", agents=["acc-cr-1"], types=["shell"], can=["read"])
    everywhere = {"condition": [{"uuid": "*"}, {"type": "shell"}]}
    asked = cloud.rpc("task_query", token=narrow["token"], task_data_query=everywhere)
    assert asked["error"]["code"] == -32003  # "*" is an agent id here, not "any"


def test_single_use_and_retired_bootstrap_registration_tokens_are_refused(make_cloud: Callable[..., Cloud]) -> None:
    c = make_cloud(bootstrap_registration="false", token_cache_seconds="0")
    r = httpx.post(c.url + REGISTER, json={"agent_id": "boot"}, headers={"Authorization": f"Bearer {AGENT}"})
    assert r.status_code == 401 and "turned off" in r.json()["error"]
    once = token(c, name="once", kind="registration", single_use=True)
    with AgentClient(c.url, token=once["token"]) as first:
        assert first.post(REGISTER, json={"agent_id": "once-1"}).status_code == 200
    r = httpx.post(c.url + REGISTER, json={"agent_id": "once-2"}, headers={"Authorization": f"Bearer {once['token']}"})
    assert r.status_code == 401 and "used up" in r.json()["error"]
