"""A loopback TCP proxy for fault tests: forwards to one or more upstreams and can cut the network.

It runs its own asyncio loop in a daemon thread, so a test drives it with plain calls:

    proxy = TcpProxy([("127.0.0.1", cloud.port)]).start()
    agent connects to proxy.url
    proxy.pause("hold")   # a partition: nothing moves either way; connections stay open
    proxy.resume()        # held bytes flow again, late requests arrive late
    proxy.pause("drop")   # a partition that resets: open connections are closed, new ones refused
    proxy.pause("hold_answers")  # requests still arrive, answers wait: "the answer is on the way"

`pause` and `resume` return once the proxy is in the new state. With several upstreams each new
connection goes to the next one that accepts (round robin), like a load balancer in front of cloud
replicas: a killed replica's connections close and the clients' retries land on another one.
`record=True` keeps what each side sent, for tests that wait on what went over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, Literal

Mode = Literal["hold", "hold_answers", "drop"]
CHUNK = 64 * 1024


class TcpProxy:
    """Listens on 127.0.0.1:<free port> and pumps bytes to an upstream; pause/resume cut the network."""

    def __init__(self, upstreams: Sequence[tuple[str, int]], *, record: bool = False) -> None:
        if not upstreams:
            raise ValueError("upstreams: at least one (host, port) is required")
        self.upstreams = list(upstreams)
        self.record = record
        self.port = 0
        self.connections = 0
        """Client connections accepted so far."""
        self.refused = 0
        """Client connections closed because no upstream accepted (or the proxy was dropping)."""
        self._sent = bytearray()  # client -> upstream, when recording
        self._received = bytearray()  # upstream -> client, when recording
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._open: asyncio.Event | None = None  # set while bytes may flow (created on the loop)
        self._answers_open: asyncio.Event | None = None  # set while upstream bytes may flow to clients
        self._dropping = False
        self._held = bytearray()  # client bytes that arrived while paused, when recording
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next = itertools.count()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        """Stop listening and close every connection."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def pause(self, mode: Mode = "hold") -> None:
        """Stop forwarding in both directions. `hold` keeps connections open (and accepts new ones, whose
        bytes wait too); `drop` closes the open ones and closes new ones at once. `hold_answers` stops only
        what upstreams send back: a request sent at any time still arrives, its answer waits for resume
        (so a test need not know whether a client's request had left before the pause)."""
        if mode not in ("hold", "hold_answers", "drop"):
            raise ValueError(f"mode: expected 'hold', 'hold_answers' or 'drop', got {mode!r}")
        self._call(self._pause(mode))

    def resume(self) -> None:
        """Forward again; bytes held during a `hold` pause are delivered now."""
        self._call(self._resume())

    def set_upstreams(self, upstreams: Sequence[tuple[str, int]]) -> None:
        """Where new connections go from now on (open ones stay where they are)."""
        self.upstreams = list(upstreams)

    def sent(self) -> bytes:
        """Everything clients sent through the proxy (record=True)."""
        with self._lock:
            return bytes(self._sent)

    def held(self) -> bytes:
        """Everything clients sent while the proxy was paused, delivered later or not (record=True)."""
        with self._lock:
            return bytes(self._held)

    def received(self) -> bytes:
        """Everything upstreams answered through the proxy (record=True)."""
        with self._lock:
            return bytes(self._received)

    # Everything below runs on the proxy's loop.

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _listen(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._answers_open = asyncio.Event()
        self._answers_open.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._dropping = True  # connections still waiting for the gate close instead of connecting
        self._abort_all()
        assert self._open is not None and self._answers_open is not None
        self._open.set()  # let held pumps run into their closed sockets and end
        self._answers_open.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)

    async def _pause(self, mode: Mode) -> None:
        assert self._open is not None and self._answers_open is not None
        if mode == "hold_answers":
            self._answers_open.clear()
            return
        self._open.clear()
        if mode == "drop":
            self._dropping = True
            self._abort_all()

    async def _resume(self) -> None:
        assert self._open is not None and self._answers_open is not None
        self._dropping = False
        self._open.set()
        self._answers_open.set()

    def _abort_all(self) -> None:
        for client, upstream in list(self._links):
            _abort(client)
            _abort(upstream)
        self._links.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._tasks.add(me)
            me.add_done_callback(self._tasks.discard)
        self.connections += 1
        assert self._open is not None and self._answers_open is not None
        if self._dropping:
            self.refused += 1
            _abort(client_w)
            return
        # Connected upstream even during a hold: the pumps are what hold the bytes (and see what is held).
        upstream = await self._connect()
        if upstream is None or self._dropping:
            self.refused += 1
            _abort(client_w)
            if upstream is not None:
                _abort(upstream[1])
            return
        up_r, up_w = upstream
        link = (client_w, up_w)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pump(client_r, up_w, self._sent, self._open),
                self._pump(up_r, client_w, self._received, self._open, self._answers_open),
            )
        finally:
            self._links.discard(link)
            _abort(client_w)
            _abort(up_w)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next upstream that accepts, trying each once."""
        upstreams = list(self.upstreams)
        start = next(self._next)
        for i in range(len(upstreams)):
            host, port = upstreams[(start + i) % len(upstreams)]
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(host, port)
        return None

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tape: bytearray, *gates: asyncio.Event
    ) -> None:
        try:
            while True:
                chunk = await reader.read(CHUNK)
                if not all(gate.is_set() for gate in gates):
                    if self.record and tape is self._sent:
                        with self._lock:
                            self._held.extend(chunk)
                    for gate in gates:
                        await gate.wait()  # read during a hold: deliver it only after resume
                if not chunk or writer.is_closing():
                    break
                if self.record:
                    with self._lock:
                        tape.extend(chunk)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # Either side closing ends the pair: half-open connections are not worth modelling here.
            _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once, with a reset rather than a polite FIN, as a broken network would."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
