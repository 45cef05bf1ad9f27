"""Running the cloud under uvicorn, answering open long-polls at once when asked to stop."""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

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


def serve(settings: CloudSettings, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        loop="auto",
        timeout_graceful_shutdown=10,
        # Longer than the usual client and load-balancer idle timeouts, so the server is not the side
        # that closes an idle keep-alive connection just as a client reuses it.
        timeout_keep_alive=75,
        access_log=False,
        log_level="info",
    )
    _Server(config).run()
