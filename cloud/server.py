"""Running the cloud under uvicorn, answering open long-polls at once when asked to stop."""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cloud.api.routes.agent_channel import FRAME_HEADROOM
from cloud.hub import Hub
from cloud.main import create_app
from cloud.settings import CloudSettings

log = logging.getLogger("tiangong.cloud")


class _Server(uvicorn.Server):
    """uvicorn waits for open connections before shutting down; wake our long-polls so it need not."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        ctx = getattr(getattr(self.config.app, "state", None), "ctx", None)
        hub: Hub | None = getattr(ctx, "hub", None)
        if hub is not None:
            try:
                asyncio.get_running_loop().call_soon_threadsafe(hub.close)
            except RuntimeError:
                log.debug("no running loop at exit; nothing to wake")
        super().handle_exit(sig, frame)


class _HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn waits forever for the headers of a request (only an idle keep-alive connection times
    out), so a client that opens connections and sends half a request could hold them all. Each request's
    headers must arrive within `header_timeout` seconds of the connection opening or the request
    starting; the body's pace is the route's business (cloud.api.guard)."""

    header_timeout = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("dropped a connection whose request headers did not arrive in %g s", self.header_timeout)
            self.transport.close()


def _protocol(header_timeout: float) -> type[HttpToolsProtocol]:
    return type("HttpProtocol", (_HeaderTimeoutProtocol,), {"header_timeout": header_timeout})


def build_server(settings: CloudSettings, host: str, port: int) -> uvicorn.Server:
    """The cloud's uvicorn server, not yet started (tests run it in a thread of their own process)."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol(settings.request_idle_timeout_seconds),
        limit_concurrency=settings.max_connections,
        # The agent channel (cloud/api/routes/agent_channel.py): frames as large as an agent's HTTP body, and
        # no per-message compression, whose CPU cost is what the channel exists to save.
        ws_max_size=settings.max_agent_request_bytes + FRAME_HEADROOM,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.channel_ping_seconds,
        ws_ping_timeout=settings.channel_ping_seconds,
        loop="auto",
        timeout_graceful_shutdown=10,
        # Longer than the usual client and load-balancer idle timeouts, so the server is not the side
        # that closes an idle keep-alive connection just as a client reuses it.
        timeout_keep_alive=75,
        access_log=False,
        log_level="info",
        log_config=None,  # uvicorn's loggers go through ours (wire.logs: JSON lines with request ids)
    )
    return _Server(config)


def serve(settings: CloudSettings, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    build_server(settings, host, port).run()
