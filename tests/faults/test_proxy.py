"""The fault proxy itself, against a local echo server: forwarding, hold, drop, resume, failover."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.e2e.harness import free_port, wait_for
from tests.faults.proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # the drop tests reset connections on purpose: no traceback in the test output


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[TcpProxy]:
    p = TcpProxy([echo], record=True).start()
    yield p
    p.close()


def _connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def test_forwards_both_ways_and_records(proxy: TcpProxy) -> None:
    with _connect(proxy) as s:
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"
    assert proxy.sent() == b"hello" and proxy.received() == b"hello"


def test_hold_delays_bytes_until_resume(proxy: TcpProxy) -> None:
    with _connect(proxy) as s:
        proxy.pause("hold")
        s.sendall(b"held")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(100)
        proxy.resume()
        s.settimeout(5)
        assert s.recv(100) == b"held"


def test_hold_makes_new_connections_wait(proxy: TcpProxy) -> None:
    proxy.pause("hold")
    with _connect(proxy) as s:
        s.sendall(b"late")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(100)
        proxy.resume()
        s.settimeout(5)
        assert s.recv(100) == b"late"


def test_hold_answers_lets_requests_arrive_and_holds_what_comes_back(proxy: TcpProxy) -> None:
    """The echo server got the bytes (the proxy recorded them as sent, not held); its answer waits."""
    with _connect(proxy) as s:
        proxy.pause("hold_answers")
        s.sendall(b"asked")
        wait_for(lambda: proxy.sent() == b"asked", 5, "the request forwarded")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(100)
        proxy.resume()
        s.settimeout(5)
        assert s.recv(100) == b"asked"
    assert proxy.held() == b""


def test_drop_closes_open_connections_and_refuses_new_ones(proxy: TcpProxy) -> None:
    with _connect(proxy) as s:
        proxy.pause("drop")
        with pytest.raises(OSError):
            s.sendall(b"x")
            if not s.recv(100):  # a FIN instead of a reset also means the connection is gone
                raise ConnectionResetError
    with pytest.raises(OSError), _connect(proxy) as s:  # refused at once, or reset on first use
        s.sendall(b"x")
        if not s.recv(100):
            raise ConnectionResetError
    proxy.resume()
    with _connect(proxy) as s:
        s.sendall(b"back")
        assert s.recv(100) == b"back"


def test_fails_over_to_the_next_upstream(echo: tuple[str, int]) -> None:
    dead = ("127.0.0.1", free_port())
    p = TcpProxy([dead, echo]).start()
    try:
        for _ in range(3):
            with _connect(p) as s:
                s.sendall(b"x")
                assert s.recv(10) == b"x"
    finally:
        p.close()
