"""`api`, `http_request` and `ping` end to end, against a real HTTP server the test starts on loopback."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.e2e.harness import Cloud


class Handler(BaseHTTPRequestHandler):
    """A small real peer: each path shows one behaviour."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        for k, v in headers or [("Content-Type", "text/plain")]:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/hello":
            self._send(200, b"hi there", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        elif self.path == "/redirect":
            self._send(302, b"", [("Location", "/hello")])
        elif self.path == "/binary":
            self._send(200, bytes(range(256)), [("Content-Type", "application/octet-stream")])
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        elif self.path == "/peer":
            self._send(200, self.client_address[0].encode())
        elif self.path == "/headers":
            self._send(200, json.dumps(dict(self.headers)).encode(), [("Content-Type", "application/json")])
        else:
            self._send(404, b"no such page")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        echo = {"content_type": self.headers.get("Content-Type"), "body_b64": base64.b64encode(body).decode()}
        self._send(201, json.dumps(echo).encode(), [("Content-Type", "application/json")])


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    assert isinstance(host, str)  # a bound socket's name; the stubs type the address a server is given
    yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    yield from _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))


@pytest.fixture(scope="module")
def web6() -> Iterator[str]:
    try:
        server = V6Server(("::1", 0), Handler)
    except OSError:
        pytest.skip("this machine has no ::1")
    yield from _serve(server)


def test_api_get_with_headers(cloud: Cloud, web: str) -> None:
    task = cloud.run(type="api", command="GET", params={"url": f"{web}/headers", "headers": {"X-Trace": "t1"}})
    assert task["status"] == "success", task
    assert json.loads(task["data"]["body"])["X-Trace"] == "t1"
    assert task["result"].startswith("Status: 200 OK HTTP/1.1\nHeaders:\n")


def test_api_post_object_and_string_bodies(cloud: Cloud, web: str) -> None:
    obj = cloud.run(type="api", command="POST", params={"url": f"{web}/echo", "body": {"name": "John"}})
    echo = json.loads(obj["data"]["body"])
    assert obj["status"] == "success" and obj["data"]["status"] == 201
    assert echo["content_type"] == "application/json"
    assert json.loads(base64.b64decode(echo["body_b64"])) == {"name": "John"}
    raw = cloud.run(
        type="api",
        command="POST",
        params={"url": f"{web}/echo", "body": "raw string data", "headers": {"Content-Type": "text/plain"}},
    )
    assert base64.b64decode(json.loads(raw["data"]["body"])["body_b64"]) == b"raw string data"


def test_api_follows_redirects_and_fails_on_404(cloud: Cloud, web: str) -> None:
    redirected = cloud.run(type="api", params={"url": f"{web}/redirect"})
    assert redirected["status"] == "success" and redirected["data"]["body"] == "hi there"
    missing = cloud.run(type="api", params={"url": f"{web}/nothing"})
    assert missing["status"] == "failed" and missing["error"] == "HTTP 404 Not Found"
    assert missing["data"]["status"] == 404 and "no such page" in missing["result"]


def test_api_refused_connection_and_timeout(cloud: Cloud, web: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    refused = cloud.run(type="api", params={"url": f"http://127.0.0.1:{port}/"})
    assert refused["status"] == "failed" and "cannot connect" in refused["error"]
    slow = cloud.run(type="api", params={"url": f"{web}/slow"}, exec_timeout=1)
    assert slow["status"] == "timeout"


def test_api_validation(cloud: Cloud) -> None:
    r = cloud.create(type="api", params={})
    assert r.status_code == 400 and "url is required in params" in r.json()["error"]
    r = cloud.create(type="api", params={"url": "ftp://x"})
    assert r.status_code == 400 and "params.url" in r.json()["error"]


def test_http_request_binary_duplicates_and_exclusive_body(cloud: Cloud, web: str) -> None:
    binary = cloud.run(type="http_request", params={"url": f"{web}/binary", "method": "GET"})
    assert base64.b64decode(binary["data"]["body_base64"]) == bytes(range(256))
    hello = cloud.run(type="http_request", params={"url": f"{web}/hello"})
    cookies = [v for k, v in hello["data"]["headers"] if k.lower() == "set-cookie"]
    assert cookies == ["a=1", "b=2"]
    sent = cloud.run(
        type="http_request",
        params={"url": f"{web}/echo", "method": "POST", "body_base64": base64.b64encode(b"\x00\xff").decode()},
    )
    assert base64.b64decode(json.loads(sent["data"]["body"])["body_b64"]) == b"\x00\xff"
    r = cloud.create(type="http_request", params={"url": f"{web}/echo", "body": "a", "body_base64": "YQ=="})
    assert r.status_code == 400 and "exclusive" in r.json()["error"]


def test_http_request_source_address(cloud: Cloud, web: str, web6: str) -> None:
    v4 = cloud.run(type="http_request", params={"url": f"{web}/peer", "ip": "ipv4 auto"})
    assert v4["status"] == "success" and v4["data"]["body"] == "127.0.0.1"
    literal = cloud.run(type="http_request", params={"url": f"{web}/peer", "ip": "127.0.0.1"})
    assert literal["data"]["body"] == "127.0.0.1"
    v6 = cloud.run(type="http_request", params={"url": f"{web6}/peer", "ip": "ipv6 auto"})
    assert v6["status"] == "success" and v6["data"]["body"] == "::1"
    r = cloud.create(type="http_request", params={"url": f"{web}/peer", "ip": "somewhere"})
    assert r.status_code == 400 and "params.ip" in r.json()["error"]


def test_secret_headers_are_masked(cloud: Cloud, web: str) -> None:
    task = cloud.run(type="api", params={"url": f"{web}/headers", "headers": {"Authorization": "Bearer s3cr3t"}})
    # The peer got it (it echoes it back); the echo, like all output, shows the secret masked.
    assert json.loads(task["data"]["body"])["Authorization"] == "******"
    assert task["params"]["headers"]["Authorization"] == "******"
    assert "s3cr3t" not in json.dumps(cloud.task(task["id"])["params"])


def test_ping_loopback_icmp_and_tcp(cloud: Cloud, web: str) -> None:
    icmp = cloud.run(type="ping", command="127.0.0.1", params={"count": 2})
    assert icmp["status"] == "success", icmp
    assert isinstance(icmp["data"]["rtt_ms"], float) and icmp["data"]["received"] == 2
    port = int(web.rsplit(":", 1)[1])
    tcp = cloud.run(type="ping", params={"host": "127.0.0.1", "method": "tcp", "port": port})
    assert tcp["status"] == "success" and tcp["data"]["method"] == "tcp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = cloud.run(type="ping", params={"host": "127.0.0.1", "method": "tcp", "port": closed})
    assert down["status"] == "failed" and "unreachable" in down["error"]


def test_api_body_is_capped_and_marked(cloud: Cloud, web: str) -> None:
    task = cloud.run(type="api", params={"url": f"{web}/binary", "max_body_bytes": 200})
    assert task["status"] == "success" and task["data"]["truncated"] is True
    assert base64.b64decode(task["data"]["body_base64"]) == bytes(range(200))
    assert task["result"].endswith("[tiangong: body cut at the size limit]")
