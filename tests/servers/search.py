"""A search server for tests: the one at `TIANGONG_TEST_ES_URL` (`http://user:pw@host:9200`), else
osmem-server, an in-memory OpenSearch-compatible server, started on a free port.

elasticsearch-py 8 cannot talk to osmem-server (it asks for Elasticsearch's compatibility media types and
checks the `X-Elastic-Product` header), so `FakeElasticsearch` records what that client really sends and
answers as Elasticsearch 8 would.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.servers import unavailable

ENV = "TIANGONG_TEST_ES_URL"


@dataclass
class SearchServer:
    """Where the server listens, its account (osmem-server has none) and which client speaks to it."""

    scheme: str
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    flavor: str = "opensearch"

    def target(self, **extra: Any) -> dict[str, Any]:
        """`params.target` for this server."""
        creds = {"user": self.user, "password": self.password} if self.user else {}
        return {"host": self.host, "port": self.port, "scheme": self.scheme, "flavor": self.flavor, **creds, **extra}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request of the test's own, to check data behind the executor's back."""
        return _request(f"{self.scheme}://{self.host}:{self.port}{path}", method, body, self.user, self.password)


def _request(url: str, method: str, body: Any, user: str | None, password: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


@contextlib.contextmanager
def running_search() -> Iterator[SearchServer]:
    """The server from the environment (its flavor read from `GET /`), else a fresh osmem-server."""
    url = os.environ.get(ENV)
    if url:
        parts = urlsplit(url)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        server = SearchServer(parts.scheme, parts.hostname or "127.0.0.1", parts.port or 9200, user, password)
        try:
            info = server.request("GET", "/")
        except OSError as exc:
            unavailable(f"the search server at {ENV}", exc)
        server.flavor = "opensearch" if info.get("version", {}).get("distribution") == "opensearch" else "elasticsearch"
        yield server
        return
    try:
        from osmem_server import OsmemServer

        osmem = OsmemServer.start(addr="127.0.0.1:0", japanese=False)
    except Exception as exc:  # not installed, no binary for this platform, or it did not come up
        unavailable("osmem-server", exc)
    try:
        parts = urlsplit(osmem.url)
        yield SearchServer("http", parts.hostname or "127.0.0.1", int(parts.port or 0))
    finally:
        osmem.close()
        if osmem.process.stdout is not None:  # OsmemServer.close leaves its stdout pipe open (a ResourceWarning)
            osmem.process.stdout.close()


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json_lines(self) -> list[Any]:
        """The body as NDJSON (a bulk request), one value per line."""
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]


@dataclass
class FakeElasticsearch:
    """A fake Elasticsearch 8 at the HTTP boundary: records each request and answers like the real one.

    A bulk item whose `_id` starts with `fail` is refused with 409, so item errors can be provoked.
    `product_header=False` answers without `X-Elastic-Product`, as a server that is not Elasticsearch.
    """

    product_header: bool = True
    tls: ssl.SSLContext | None = None
    """Serve HTTPS with this context (see `self_signed_tls`)."""
    stall: bool = False
    """Record requests but answer none until the fake is closed: a server that takes too long."""
    hold: str | None = None
    """Hold requests whose path ends with this (`_delete_by_query`) as running tasks, listed by `GET
    _tasks` with their X-Opaque-Id, until `POST _tasks/<id>/_cancel` names them: then they are answered
    as Elasticsearch answers a canceled delete_by_query. `holding` is set when one arrives."""
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    holding: threading.Event = field(default_factory=threading.Event)
    _held: dict[str, tuple[Recorded, threading.Event]] = field(default_factory=dict)

    def __enter__(self) -> FakeElasticsearch:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append(Recorded(self.command, self.path, headers, body))
                if fake.stall:
                    fake._closing.wait()
                    return
                if fake.hold and urlsplit(self.path).path.endswith(fake.hold):
                    canceled = threading.Event()
                    fake._held[f"fake-node:{len(fake._held) + 1}"] = (fake.requests[-1], canceled)
                    fake.holding.set()
                    canceled.wait(30)
                status, answer = fake.answer(self.command, urlsplit(self.path).path, body)
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if fake.product_header:
                    self.send_header("X-Elastic-Product", "Elasticsearch")
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep the test output clean

        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-es", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """What Elasticsearch 8 answers to the requests the executor makes."""
        parts = [unquote(p) for p in path.split("/") if p]
        if parts == ["_tasks"] and method == "GET":
            tasks = {
                task_id: {
                    "node": "fake-node",
                    "id": int(task_id.split(":")[1]),
                    "action": "indices:data/write/delete/byquery",
                    "cancellable": True,
                    "headers": {"X-Opaque-Id": req.headers.get("x-opaque-id", "")},
                }
                for task_id, (req, canceled) in self._held.items()
                if not canceled.is_set()
            }
            return 200, {"nodes": {"fake-node": {"name": "fake", "tasks": tasks}}}
        if len(parts) == 3 and parts[0] == "_tasks" and parts[2] == "_cancel" and parts[1] in self._held:
            self._held[parts[1]][1].set()
            return 200, {"nodes": {}}
        if parts[-1:] == ["_delete_by_query"] and self.hold:
            canceled_answer = {"took": 5, "total": 2, "deleted": 1, "canceled": "by user request", "failures": []}
            return 200, canceled_answer
        if parts[-1:] == ["_bulk"]:
            lines = iter(json.loads(line) for line in body.decode().splitlines() if line.strip())
            items = []
            for action in lines:  # an action line, then its source line unless it is a delete
                items.append(self._bulk_item(action, parts[0]))
                if "delete" not in action:
                    next(lines)
            return 200, {"took": 1, "errors": any("error" in next(iter(i.values())) for i in items), "items": items}
        if len(parts) == 3 and parts[1] == "_update":
            return 200, {"_index": parts[0], "_id": parts[2], "_version": 2, "result": "updated"}
        if len(parts) == 2 and parts[1] == "_delete_by_query":
            return 200, {"took": 1, "total": 2, "deleted": 2, "version_conflicts": 0, "failures": []}
        if len(parts) >= 2 and parts[1] == "_doc":
            doc_id = parts[2] if len(parts) == 3 else "generated-1"
            return 201, {"_index": parts[0], "_id": doc_id, "_version": 1, "result": "created"}
        return 404, {
            "error": {"type": "fake_error", "reason": f"the fake does not know {method} {path}"},
            "status": 404,
        }

    @staticmethod
    def _bulk_item(line: dict[str, Any], index: str) -> dict[str, Any]:
        kind, meta = next(iter(line.items()))
        doc_id = str(meta.get("_id", "generated-1"))
        base = {"_index": meta.get("_index", index), "_id": doc_id}
        if doc_id.startswith("fail"):
            error = {"type": "version_conflict_engine_exception", "reason": f"[{doc_id}]: version conflict"}
            return {kind: {**base, "status": 409, "error": error}}
        result = {"index": "created", "create": "created", "update": "updated", "delete": "deleted"}[kind]
        return {kind: {**base, "status": 201 if result == "created" else 200, "result": result}}


def self_signed_tls(workdir: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (no client trusts it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
