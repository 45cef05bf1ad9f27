"""web_shell (seed 000) end to end: a real cloud relays between a real agent's PTY and a WebSocket client
playing the browser (docs/web-shell.md)."""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve

from executors.procs import proc_stat
from tests.e2e.harness import ADMIN, Cloud, wait_for

CLOUD_SETTINGS = {"shell_max_message_bytes": 4096}


def open_shell(cloud: Cloud, token: str = ADMIN, **params: Any) -> str:
    body = {"agent_id": "local", "type": "web_shell", "params": params}
    r = cloud.http.post("/api/v1/tasks", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def browser(cloud: Cloud, task_id: str, token: str = ADMIN) -> ClientConnection:
    """The browser's side, authenticated as a page does it: the token in a subprotocol."""
    url = cloud.url.replace("http://", "ws://") + f"/api/v1/tasks/{task_id}/shell"
    return connect(url, subprotocols=["tiangong.v1", f"bearer.{token}"], open_timeout=20)  # type: ignore[list-item]


def read_until(ws: ClientConnection | ServerConnection, pattern: bytes, timeout: float = 20) -> bytes:
    """The terminal's bytes up to and including `pattern` (a regex)."""
    seen = b""
    while not re.search(pattern, seen):
        msg = ws.recv(timeout=timeout)
        seen += msg if isinstance(msg, bytes) else msg.encode()
    return seen


def closed(ws: ClientConnection, timeout: float = 20) -> tuple[int, str]:
    """Read until the socket closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=timeout)
    rcvd = info.value.rcvd
    assert rcvd is not None, "closed without a close frame"
    return rcvd.code, rcvd.reason


def token(cloud: Cloud, **scope: Any) -> str:
    r = cloud.http.post("/api/v1/tokens", json={"name": f"t-{uuid.uuid4().hex[:8]}", **scope})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_a_client_types_echo_hi_and_reads_hi_and_the_transcript_is_the_log(cloud: Cloud) -> None:
    task_id = open_shell(cloud)
    with browser(cloud, task_id) as ws:
        assert ws.subprotocol == "tiangong.v1"  # never the bearer one echoed back
        ws.send(b"echo hi\n")
        read_until(ws, rb"[\r\n]hi\r\n")
        ws.send(b"exit 0\n")
        assert closed(ws) == (1000, "the shell exited with code 0")
    done = cloud.wait_final(task_id)
    assert done["status"] == "success" and done["exit_code"] == 0, done
    lines = [line["message"] for line in cloud.logs(task_id)]
    assert "hi" in lines  # the output, as the screen showed it
    assert any(line.endswith("echo hi") for line in lines)  # the typed command, as the terminal echoed it
    assert not any("\x1b" in line for line in lines)  # escape sequences are not kept


def test_resize_changes_the_terminal_size(cloud: Cloud) -> None:
    task_id = open_shell(cloud, cols=100, rows=30)
    with browser(cloud, task_id) as ws:
        ws.send(b"stty size\n")
        read_until(ws, rb"[\r\n]30 100\r\n")
        ws.send(orjson.dumps({"type": "resize", "cols": 123, "rows": 45}).decode())
        ws.send(orjson.dumps({"type": "input", "data": "stty size\n"}).decode())
        read_until(ws, rb"[\r\n]45 123\r\n")


def test_idle_timeout_ends_the_session_as_timeout(cloud: Cloud) -> None:
    task_id = open_shell(cloud, idle_timeout=2)
    with browser(cloud, task_id) as ws:
        code, reason = closed(ws)
    assert (code, reason) == (4008, "idle for 2 s (params.idle_timeout)")
    done = cloud.wait_final(task_id)
    assert done["status"] == "timeout" and "params.idle_timeout" in done["error"]


def _gone(pid: int) -> bool:
    """The process has ended (a zombie left for its parent or init to reap counts as ended)."""
    fields = proc_stat(pid)
    return fields is None or fields[0] in (b"Z", b"X")


def test_cancel_ends_the_session_and_kills_the_shells_process_group(cloud: Cloud) -> None:
    task_id = open_shell(cloud)
    with browser(cloud, task_id) as ws:
        # A background job ignoring the hangup: only the group's SIGKILL ends it.
        ws.send(b"trap '' HUP; sleep 300 & echo pids=$$,$!.\n")
        found = re.search(rb"pids=(\d+),(\d+)\.", read_until(ws, rb"pids=\d+,\d+\."))
        assert found is not None
        shell, job = int(found[1]), int(found[2])
        assert not _gone(shell) and not _gone(job)
        assert cloud.http.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 200
        assert closed(ws) == (4009, "the task was canceled")
    assert cloud.wait_final(task_id)["status"] == "canceled"
    wait_for(lambda: _gone(shell) and _gone(job), 15, "the shell and its job to be killed")


def test_the_browser_leaving_ends_the_task(cloud: Cloud) -> None:
    task_id = open_shell(cloud)
    with browser(cloud, task_id) as ws:
        ws.send(b"echo ready\n")
        read_until(ws, rb"[\r\n]ready\r\n")
    done = cloud.wait_final(task_id)
    assert done["status"] == "success" and "the browser left" in done["result"], done


def test_only_tokens_allowed_web_shell_on_that_agent_attach_before_accept(cloud: Cloud) -> None:
    task_id = open_shell(cloud)
    shell_only = token(cloud, agents=["local"], types=["shell"], can=["create", "read"])
    elsewhere = token(cloud, agents=["other-*"], types=["web_shell"], can=["create"])
    read_only = token(cloud, agents=["local"], types=["web_shell"], can=["read"])
    for refused, why in (
        (shell_only, "does not reach 'web_shell'"),
        (elsewhere, "does not reach agent"),
        (read_only, "may not create"),
    ):
        with pytest.raises(InvalidStatus) as info:
            browser(cloud, task_id, refused)
        assert info.value.response.status_code == 403
        assert why in orjson.loads(info.value.response.body or b"{}")["error"]
    with pytest.raises(InvalidStatus) as info:
        browser(cloud, task_id, "wrong")
    assert info.value.response.status_code == 401
    # The agent's route takes the agent token and the attempt's task token, nothing else.
    agent_url = cloud.url.replace("http://", "ws://") + f"/api/v1/agent/tasks/{task_id}/shell"
    with pytest.raises(InvalidStatus) as info:
        connect(agent_url, additional_headers={"Authorization": f"Bearer {ADMIN}"})
    assert info.value.response.status_code == 403
    assert cloud.http.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 200
    cloud.wait_final(task_id)
    # A token allowed web_shell on the agent attaches to a shell it opened (another's: the next test).
    allowed = token(cloud, agents=["local"], types=["web_shell"], can=["create"])
    own = open_shell(cloud, allowed)
    with browser(cloud, own, allowed) as ws:
        ws.send(b"echo ok$((1+1))\n")
        read_until(ws, rb"ok2")
    cloud.wait_final(own)


def test_only_the_token_that_created_a_shell_or_an_admin_attaches(cloud: Cloud) -> None:
    scope = {"agents": ["local"], "types": ["web_shell"], "can": ["create"]}
    alice, bob = token(cloud, **scope), token(cloud, **scope)
    alices = open_shell(cloud, alice)
    # Bob may open shells on this agent, but not attach to Alice's: refused before the handshake.
    with pytest.raises(InvalidStatus) as info:
        browser(cloud, alices, bob)
    assert info.value.response.status_code == 403
    assert orjson.loads(info.value.response.body or b"{}")["error"] == (
        f"{alices} is another token's shell session: only the token that created it, or an admin, may attach"
    )
    with browser(cloud, alices, alice) as ws:
        ws.send(b"echo alice\n")
        read_until(ws, rb"[\r\n]alice\r\n")
    cloud.wait_final(alices)
    # An admin token may attach to anyone's session.
    bobs = open_shell(cloud, bob)
    with browser(cloud, bobs, ADMIN) as ws:
        ws.send(b"echo admin\n")
        read_until(ws, rb"[\r\n]admin\r\n")
    cloud.wait_final(bobs)


def test_a_second_browser_is_refused_with_a_reason(cloud: Cloud) -> None:
    task_id = open_shell(cloud)
    with browser(cloud, task_id) as first:
        first.send(b"echo first\n")
        read_until(first, rb"[\r\n]first\r\n")
        with browser(cloud, task_id) as second:
            assert closed(second) == (4409, f"another browser is attached to {task_id}; one at a time")
        first.send(b"echo still\n")
        read_until(first, rb"[\r\n]still\r\n")
    cloud.wait_final(task_id)
    with pytest.raises(InvalidStatus) as info:  # ended: nothing to attach to
        browser(cloud, task_id)
    assert info.value.response.status_code == 409


def test_browsers_attaching_at_the_same_instant_get_one_session(cloud: Cloud) -> None:
    """Four handshakes released together: exactly one browser gets the shell, the others 4409."""
    task_id = open_shell(cloud)
    n = 4
    start = threading.Barrier(n)
    outcomes: list[tuple[str, Any]] = [("none", None)] * n

    def attach(i: int) -> None:
        start.wait()
        try:
            with browser(cloud, task_id) as ws:
                ws.send(f"echo solo{i}\n".encode())  # a refused browser's typing never reaches the shell
                read_until(ws, rf"[\r\n]solo{i}\r\n".encode())
                outcomes[i] = ("attached", i)
        except ConnectionClosed as exc:
            outcomes[i] = ("closed", (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else None)

    threads = [threading.Thread(target=attach, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [kind for kind, _ in outcomes].count("attached") == 1, outcomes
    refused = [why for kind, why in outcomes if kind == "closed"]
    assert refused == [(4409, f"another browser is attached to {task_id}; one at a time")] * (n - 1), outcomes
    cloud.wait_final(task_id)


def test_a_message_over_the_cap_ends_the_session(cloud: Cloud) -> None:
    task_id = open_shell(cloud)
    with browser(cloud, task_id) as ws:
        ws.send(b"x" * 5000)
        code, reason = closed(ws)
    assert code == 1009 and "shell_max_message_bytes (4096)" in reason
    cloud.wait_final(task_id)


@dataclass
class SeedServer:
    """Seed 000's `wss://YOUR_SERVER/auto_gen`: a WebSocket server of the caller's own."""

    port: int = 0
    connections: list[ServerConnection] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)

    def handler(self, conn: ServerConnection) -> None:
        self.connections.append(conn)
        with contextlib.suppress(ConnectionClosed):
            for msg in conn:
                self.received.append(msg if isinstance(msg, bytes) else msg.encode())


@pytest.fixture
def seed_server() -> Iterator[SeedServer]:
    seed = SeedServer()
    with serve(seed.handler, "127.0.0.1", 0) as server:
        seed.port = server.socket.getsockname()[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield seed
        server.shutdown()


def test_seed_000_url_and_terminal_id_over_json_rpc(cloud: Cloud, seed_server: SeedServer) -> None:
    terminal = str(uuid.uuid4())
    shape = {"web_shell": {"url": f"ws://127.0.0.1:{seed_server.port}/auto_gen", "terminal_id": terminal}}
    answer = cloud.rpc("task_create_task", token=ADMIN, target_uuid="local", task_type=shape)
    task_id = f"task-{answer['result']['id']}"
    conn = wait_for(lambda: seed_server.connections and seed_server.connections[0], 20, "the agent to connect")
    assert conn.request is not None
    assert conn.request.path == "/auto_gen" and conn.request.headers["X-Terminal-Id"] == terminal
    assert "Authorization" not in conn.request.headers  # the agent's token never goes to a caller's server
    conn.send(b"echo seed$((0+0))\n")
    wait_for(lambda: re.search(rb"[\r\n]seed0\r\n", b"".join(seed_server.received)), 20, "the shell's answer")
    conn.send(b"exit 0\n")
    done = cloud.wait_final(task_id)
    assert done["status"] == "success", done
    assert "seed0" in [line["message"] for line in cloud.logs(task_id)]
    missing = cloud.rpc(
        "task_create_task", token=ADMIN, target_uuid="local", task_type={"web_shell": {"url": "ws://x/"}}
    )
    assert "terminal_id" in missing["error"]["message"]


def test_bad_params_are_a_400_naming_the_field(cloud: Cloud) -> None:
    for params, name in (
        ({"url": "ftp://x/"}, "params.url"),
        ({"terminal_id": "nope"}, "params.terminal_id"),
        ({"idle_timeout": 0}, "params.idle_timeout"),
        ({"cols": "80"}, "params.cols"),
        ({"idle_timout": 5}, "params.idle_timout"),
    ):
        r = cloud.create(type="web_shell", params=params)
        assert r.status_code == 400 and name in r.json()["error"], (params, r.text)
