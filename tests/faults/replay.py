"""An HTTP proxy for the agent protocol that delivers a claim reply twice, as happens when an agent's
claim request is retried after its first reply did get through (a reset connection, a load balancer
retrying an idempotent-looking POST). The agent must not run the same (task, attempt) twice.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


class ClaimReplayProxy:
    """Forwards every request to `upstream`; the first claim reply carrying tasks is also the answer,
    word for word, to the next claim (which is not forwarded)."""

    def __init__(self, upstream: str) -> None:
        self._http = httpx.Client(base_url=upstream, timeout=120)
        self._lock = threading.Lock()
        self._captured: bytes | None = None
        self.replayed = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ClaimReplayProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        is_claim = req.command == "POST" and req.path.endswith("/claim")
        if is_claim:
            with self._lock:
                replay = self._captured if not self.replayed.is_set() else None
                if replay is not None:
                    self.replayed.set()
            if replay is not None:
                self._answer(req, 200, "application/json", replay)
                return
        headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP}
        r = self._http.request(req.command, req.path, headers=headers, content=body)
        if is_claim and r.status_code == 200 and r.json():
            with self._lock:
                if self._captured is None:
                    self._captured = r.content
        self._answer(req, r.status_code, r.headers.get("content-type", "application/json"), r.content)

    @staticmethod
    def _answer(req: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.write(body)
