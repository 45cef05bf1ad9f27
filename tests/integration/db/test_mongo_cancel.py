"""A `mongo` cancel whose kill finds nothing to kill says so, rather than claiming the operation was killed.

At the wire, through MongoWireProxy in front of nx-27017 (see test_mongo.py): the proxy holds the insert as if
it were still on its way, and lets it reach the server and finish at the moment the kill looks for it with
`$currentOp`, which then lists nothing. This is the race a real cancel meets when the operation ends just
as the cancel arrives.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.db.mongo_wire import MongoWireProxy, _Client
from tests.servers.mongo import MongoServer
from tests.unit.executors.harness import cancel_when, make_task, run_task
from wire.tasks import TaskStatus


@dataclass
class FinishingProxy(MongoWireProxy):
    """Holds a tagged command, and lets it through to the server when `$currentOp` asks what is running,
    so the kill finds the operation already finished."""

    _raw: dict[int, bytes] = field(default_factory=dict)
    _ups: dict[int, socket.socket] = field(default_factory=dict)

    def _upstream(self, client: _Client, up: socket.socket) -> None:
        self._ups[id(client)] = up
        super()._upstream(client, up)

    def _answered(self, client: _Client, data: bytes, body: dict[str, Any]) -> bool:
        pipeline = body.get("pipeline") or [{}]
        if "aggregate" in body and "$currentOp" in pipeline[0]:
            for opid, (held_client, _, _) in self._held.items():
                self._ups[id(held_client)].sendall(self._raw.pop(opid))  # it reaches the server and finishes
            self._held.clear()
        held_before = len(self._held)
        answered = super()._answered(client, data, body)
        if len(self._held) > held_before:
            self._raw[len(self._held)] = data
        return answered


def test_a_kill_that_finds_no_running_operation_says_so(
    mongo: MongoServer, client: Any, db: str, tmp_path: Path
) -> None:
    ops = [
        {"operation": "insert", "collection": "users", "documents": [{"_id": 1}]},
        {"operation": "insert", "collection": "users", "documents": [{"_id": 2}]},
    ]
    with FinishingProxy((mongo.host, mongo.port), hold="tiangong:") as proxy:
        started = time.monotonic()
        target = {"host": "127.0.0.1", "port": proxy.port, "db": db}
        task = make_task(json.dumps(ops), type="mongo", target=target)
        out, h = run_task(task, tmp_path, setup=cancel_when(proxy.holding))
        elapsed = time.monotonic() - started

    assert out.status == TaskStatus.canceled
    assert out.error == (
        "operation 1 of 2 (insert users) stopped: canceled; it may have been applied in part; the kill found"
        " no running operation on the server: it had already finished, or had not reached the server yet"
    )
    lines = [message for _, message in h.lines]
    assert (
        "the kill found no running operation tiangong:task-1:1 on the server:"
        " it had already finished, or had not reached the server yet"
    ) in lines
    assert not any(line.startswith("killed operation") for line in lines)
    assert not [c for c in proxy.commands if "killOp" in c]  # nothing was listed, so nothing was killed
    assert client[db].users.find_one({"_id": 1}) == {"_id": 1}  # it finished: applied, as the error warns
    assert client[db].users.find_one({"_id": 2}) is None  # the cancel stopped the list there
    assert elapsed < 5  # the operation answered once it finished: no interrupt grace was waited out


def test_a_kill_that_finds_the_operation_says_it_killed_it(
    mongo: MongoServer, client: Any, db: str, tmp_path: Path
) -> None:
    ops = [{"operation": "insert", "collection": "users", "documents": [{"_id": 1}]}]
    with MongoWireProxy((mongo.host, mongo.port), hold="tiangong:") as proxy:
        target = {"host": "127.0.0.1", "port": proxy.port, "db": db}
        task = make_task(json.dumps(ops), type="mongo", target=target)
        out, h = run_task(task, tmp_path, setup=cancel_when(proxy.holding))

    assert out.status == TaskStatus.canceled
    assert out.error == "operation 1 of 1 (insert users) stopped: canceled; it may have been applied in part"
    assert "killed operation tiangong:task-1:1 on the server" in [message for _, message in h.lines]
    assert client[db].users.count_documents({}) == 0
