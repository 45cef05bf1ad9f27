"""A recording MongoDB wire-protocol proxy, for what nx-27017 cannot show: an operation still running when
the task is canceled, found by `$currentOp` and ended by `killOp`.

Everything goes through to the real server (nx-27017) byte for byte, except three things, which the proxy
does as mongod would: a command whose `comment` starts with `hold` is held (not forwarded) as a running
operation; an `aggregate` with a `$currentOp` stage is answered with the held operations; and a `killOp`
naming a held operation is forwarded, and the held command then answered with mongod's `Interrupted`
error. Every OP_MSG command body is recorded in `commands`.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

OP_MSG = 2013
_ids = itertools.count(1_000_000)


def _read(sock: socket.socket) -> bytes | None:
    """One whole message, or None when the peer closed."""
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    size = struct.unpack("<i", head)[0]
    data = head
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _body(data: bytes) -> dict[str, Any] | None:
    """The command of an OP_MSG (its kind-0 section); None for other opcodes."""
    import bson

    if struct.unpack("<i", data[12:16])[0] != OP_MSG:
        return None
    pos = 20
    while pos < len(data):
        kind = data[pos]
        size = struct.unpack("<i", data[pos + 1 : pos + 5])[0]
        if kind == 0:
            return dict(bson.decode(data[pos + 1 : pos + 1 + size]))
        pos += 1 + size
    return None


def _reply(response_to: int, doc: dict[str, Any]) -> bytes:
    import bson

    body = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
    return struct.pack("<iiii", 16 + len(body), next(_ids), response_to, OP_MSG) + body


@dataclass
class _Client:
    sock: socket.socket
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)


@dataclass
class MongoWireProxy:
    """Listens on `port`, relays to `upstream`; see the module docstring."""

    upstream: tuple[str, int]
    hold: str
    commands: list[dict[str, Any]] = field(default_factory=list)
    holding: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    _held: dict[int, tuple[_Client, int, dict[str, Any]]] = field(default_factory=dict)
    _socks: list[socket.socket] = field(default_factory=list)

    def __enter__(self) -> MongoWireProxy:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="mongo-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in [self._listener, *self._socks]:
            with contextlib.suppress(OSError):  # already closed by the peer
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            self._socks += [conn, up]
            client = _Client(conn)
            threading.Thread(target=self._downstream, args=(up, client), daemon=True).start()
            threading.Thread(target=self._upstream, args=(client, up), daemon=True).start()

    def _downstream(self, up: socket.socket, client: _Client) -> None:
        try:
            while (data := _read(up)) is not None:
                client.send(data)
        except OSError:
            return

    def _upstream(self, client: _Client, up: socket.socket) -> None:
        try:
            while (data := _read(client.sock)) is not None:
                body = _body(data)
                if body is not None:
                    self.commands.append(body)
                    if self._answered(client, data, body):
                        continue
                up.sendall(data)
        except OSError:
            return

    def _answered(self, client: _Client, data: bytes, body: dict[str, Any]) -> bool:
        request_id = struct.unpack("<i", data[4:8])[0]
        if str(body.get("comment", "")).startswith(self.hold):
            opid = len(self._held) + 1
            command = {k: v for k, v in body.items() if k not in ("lsid", "$clusterTime")}
            self._held[opid] = (client, request_id, command)
            self.holding.set()
            return True
        pipeline = body.get("pipeline") or [{}]
        if "aggregate" in body and "$currentOp" in pipeline[0]:
            ops = [{"opid": opid, "op": "command", "command": cmd} for opid, (_, _, cmd) in self._held.items()]
            cursor = {"firstBatch": ops, "id": 0, "ns": "admin.$cmd.aggregate"}
            client.send(_reply(request_id, {"cursor": cursor, "ok": 1.0}))
            return True
        if "killOp" in body and body.get("op") in self._held:
            held_client, held_request, _ = self._held.pop(body["op"])
            error = {"ok": 0.0, "errmsg": "operation was interrupted", "code": 11601, "codeName": "Interrupted"}
            held_client.send(_reply(held_request, error))
        return False
