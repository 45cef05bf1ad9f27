"""`mongo` (seed 004 §4.3): insert, update and delete operations given as JSON, run with pymongo.

Operations run in order and are not transactional: the first failure stops the list and what ran before
it stays applied, which the result spells out. One MongoClient is cached per target in `_CLIENTS`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from executors.base import Stopped
from executors.db import blocking, operations, pools
from executors.db.base import DbExecutor, TargetResult, TargetRun
from executors.db.everything import mongo_matches_everything
from executors.db.params import DbParams, Target
from executors.db.report import jsonable
from wire.tasks import LogLevel, TaskStatus

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.database import Database

FIELDS: dict[str, tuple[str, ...]] = {
    "insert": ("operation", "collection", "documents"),
    "update": ("operation", "collection", "filter", "update"),
    "delete": ("operation", "collection", "filter"),
}
CONNECT_TIMEOUT_SECONDS = 10.0
"""Connecting, and checking the server answers (and the account logs in), may take this long."""
KILL_TIMEOUT_SECONDS = 2.0
"""Finding and killing a canceled operation on the server may take this long."""
NOTHING_KILLED = "it had already finished, or had not reached the server yet"
"""Why a cancel's kill can find no operation: said rather than claiming a kill."""
MAX_IDLE_TIME_MS = 60_000
"""A pooled connection idle this long is closed (pymongo has no idle-count bound like seed 004's 5)."""


def parse_operations(text: str, root: str, allow_all: bool, loads: Callable[[str], Any] = json.loads) -> list[Any]:
    """The checked operations; ValueError names the field, e.g. `command[1].filter: ...`."""
    return operations.parse_operations(text, root, partial(_check, allow_all=allow_all), loads)


def _check(op: Any, where: str, *, allow_all: bool) -> None:
    if not isinstance(op, dict):
        raise ValueError(f"{where}: must be an object with an operation")
    name = op.get("operation")
    if name not in FIELDS:
        got = f"unknown operation {name!r}" if "operation" in op else "required"
        raise ValueError(f"{where}.operation: {got}; known: {', '.join(FIELDS)}")
    for key in op:
        if key not in FIELDS[name]:
            raise ValueError(f"{where}.{key}: unknown field for {name}; known: {', '.join(FIELDS[name][1:])}")
    coll = op.get("collection")
    if not isinstance(coll, str) or not coll.strip() or "$" in coll or "\0" in coll:
        raise ValueError(f"{where}.collection: a collection name is required (without '$')")
    if name == "insert":
        docs = op.get("documents")
        if not isinstance(docs, list) or not docs:
            raise ValueError(f"{where}.documents: a non-empty list of documents is required")
        for j, doc in enumerate(docs):
            if not isinstance(doc, dict):
                raise ValueError(f"{where}.documents[{j}]: must be an object")
        return
    flt = op.get("filter")
    if not isinstance(flt, dict):
        raise ValueError(f"{where}.filter: an object is required")
    why = mongo_matches_everything(flt)
    if why and not allow_all:
        verb = "deletes" if name == "delete" else "updates"
        raise ValueError(f"{where}.filter: {why} {verb} every document; set exec_options.allow_dangerous to allow it")
    if name == "update":
        upd = op.get("update")
        if not isinstance(upd, dict) or not upd:
            raise ValueError(f"{where}.update: a non-empty object is required")
        operators = [k.startswith("$") for k in upd]
        if any(operators) and not all(operators):
            raise ValueError(
                f"{where}.update: mixes operators ($set, $inc, ...) with plain fields; use one or the other"
            )


def _as_update(update: dict[str, Any]) -> dict[str, Any]:
    """Plain fields are set (seed 004's `{"status": "active"}`); operator documents go as they are."""
    return update if next(iter(update)).startswith("$") else {"$set": update}


def _extended_json(text: str) -> Any:
    """MongoDB Extended JSON: `{"$oid": ...}`, `{"$date": ...}` become BSON values (the agent has bson)."""
    from bson import json_util

    return json_util.loads(text)


def _client_options(target: Target) -> dict[str, Any]:
    """MongoClient keywords: seed 004's pool size, short connect timeouts, TLS from `sslmode`."""
    opts: dict[str, Any] = {
        "host": f"[{target.host}]" if ":" in target.host else target.host,
        "port": target.port,
        "maxPoolSize": pools.MAX_OPEN,
        "minPoolSize": 0,
        "maxIdleTimeMS": MAX_IDLE_TIME_MS,
        "connectTimeoutMS": int(CONNECT_TIMEOUT_SECONDS * 1000),
        "serverSelectionTimeoutMS": int(CONNECT_TIMEOUT_SECONDS * 1000),
        "appname": "tiangong",
        "connect": False,
    }
    if target.user:
        # Accounts live in `admin` in the usual setup (seed 004's example logs in as admin to test_db).
        opts.update(username=target.user, password=target.password or "", authSource="admin")
    if target.sslmode in ("require", "verify-ca", "verify-full"):
        opts["tls"] = True
        if target.sslmode == "require" or not target.verify_tls:
            opts["tlsAllowInvalidCertificates"] = True
        elif target.sslmode == "verify-ca":
            opts["tlsAllowInvalidHostnames"] = True
    return opts


def _new_client(target: Target) -> MongoClient[Any]:
    from pymongo import MongoClient

    return MongoClient(**_client_options(target))


_CLIENTS: pools.PoolCache[MongoClient[Any]] = pools.PoolCache(lambda c: c.close())
"""One client (and so one connection pool) per target; idle ones closed, at most `pools.MAX_POOLS`."""


def _connect(client: MongoClient[Any], target: Target, timeout: float) -> None:
    """Fail fast: pymongo would retry a refused server until serverSelectionTimeoutMS, so one plain TCP
    connect first reports the refusal at once; then a ping checks the server answers and the login."""
    import pymongo

    socket.create_connection((target.host, target.port), timeout=min(timeout, CONNECT_TIMEOUT_SECONDS)).close()
    with pymongo.timeout(min(timeout, CONNECT_TIMEOUT_SECONDS)):
        client.admin.command("ping")


class _Failed(Exception):
    """An operation failed after changing some documents: `counts` says how many."""

    def __init__(self, message: str, counts: dict[str, Any]) -> None:
        super().__init__(message)
        self.counts = counts


def _apply(db: Database[Any], op: dict[str, Any], timeout: float, max_ids: int, tag: str) -> dict[str, Any]:
    """Run one operation (worker thread) with `tag` as its comment; `pymongo.timeout` also sets maxTimeMS
    on the server."""
    import pymongo
    from pymongo.errors import BulkWriteError, WriteError

    coll = db[op["collection"]]
    with pymongo.timeout(timeout):
        if op["operation"] == "insert":
            docs = op["documents"]
            try:
                coll.insert_many(docs, ordered=True, comment=tag)
                done = len(docs)
            except BulkWriteError as exc:  # ordered: the documents before the failing one are in
                done = int(exc.details.get("nInserted", 0))
                counts = _inserted(docs[:done], max_ids)
                raise _Failed(f"{_message(exc)} ({done} of {len(docs)} documents inserted before it)", counts) from exc
            return _inserted(docs, max_ids)
        if op["operation"] == "update":
            try:
                r = coll.update_many(op["filter"], _as_update(op["update"]), comment=tag)
            except WriteError as exc:  # MongoDB changes documents one by one, and keeps what it changed
                raise _Failed(f"{_message(exc)} (documents updated before the error stay updated)", {}) from exc
            return {"matched_count": r.matched_count, "modified_count": r.modified_count}
        d = coll.delete_many(op["filter"], comment=tag)
        return {"deleted_count": d.deleted_count}


def _kill_tagged(client: MongoClient[Any], tag: str) -> int:
    """killOp every operation whose comment is `tag` (best effort); how many were found."""
    import pymongo
    from pymongo.errors import OperationFailure

    with pymongo.timeout(KILL_TIMEOUT_SECONDS):
        try:
            ops = list(
                client.admin.aggregate([{"$currentOp": {"allUsers": True}}, {"$match": {"command.comment": tag}}])
            )
        except OperationFailure:  # servers (and stand-ins) without the $currentOp stage: the older command
            ops = list(client.admin.command({"currentOp": 1, "command.comment": tag}).get("inprog", []))
        for found in ops:
            client.admin.command("killOp", op=found["opid"])
    return len(ops)


def _inserted(docs: list[dict[str, Any]], max_ids: int) -> dict[str, Any]:
    """An insert's counts: all of them, with at most `max_ids` ids, marked when the list is cut."""
    return {
        "inserted_count": len(docs),
        "inserted_ids": [jsonable(d["_id"]) for d in docs[:max_ids]],
        "inserted_ids_truncated": len(docs) > max_ids,
    }


def _message(exc: BaseException) -> str:
    """A pymongo error as one line: the server's own message without the `full error: {...}` dump."""
    details: Any = getattr(exc, "details", None)
    if isinstance(details, dict):
        errors = details.get("writeErrors") or [details]
        first = errors[0] if isinstance(errors[0], dict) else {}
        text = str(first.get("errmsg") or str(exc).split(", full error:")[0])
    else:
        text = str(exc).split(", full error:")[0] or type(exc).__name__
    return " ".join(text.split())


class MongoExecutor(DbExecutor):
    """`mongo`."""

    type: ClassVar[str] = "mongo"

    def check_command(self, command: str, params: DbParams) -> None:
        parse_operations(command, "command", params.exec_options.allow_all)

    def driver_modules(self, targets: list[Target]) -> list[str]:
        return ["pymongo", "bson.json_util"]

    async def run_target(self, target: Target, run: TargetRun) -> TargetResult:
        ops = await operations.read_operations(
            target, run, lambda text, root: parse_operations(text, root, run.options.allow_all, _extended_json), "URI"
        )
        if isinstance(ops, TargetResult):
            return ops
        loop = asyncio.get_running_loop()
        with _CLIENTS.lease((*target.pool_key(), target.verify_tls), lambda: _new_client(target)) as client:
            try:
                remaining = run.deadline - loop.time()
                await blocking.call(
                    lambda: _connect(client, target, remaining), cancel=run.ctx.cancel_event, deadline=run.deadline
                )
            except Stopped as exc:
                return TargetResult(
                    target, operations.stopped(exc.reason), f"{exc.reason} while connecting to {target.label}"
                )
            except Exception as exc:
                error = f"cannot connect to {target.label}: {_message(exc)}"
                run.log(error, LogLevel.error)
                return TargetResult(target, TaskStatus.failed, error)
            return await _Ops(client[str(target.database)], ops, target, run).run_all()


class _Ops(operations.OperationLoop):
    """The operation loop on one database."""

    on = "collection"
    on_label = "Collection"

    def __init__(self, db: Database[Any], ops: list[dict[str, Any]], target: Target, run: TargetRun) -> None:
        super().__init__(ops, target, run)
        self.db = db
        self.loop = asyncio.get_running_loop()
        """`interrupt` runs in a worker thread; the task's log is written on the loop."""
        self.kill_found_nothing = False

    def apply(self, op: dict[str, Any], timeout: float, tag: str) -> tuple[dict[str, Any], str]:
        return _apply(self.db, op, timeout, self.run.options.max_rows, tag), ""

    def interrupt(self, tag: str) -> None:
        try:
            found = _kill_tagged(self.db.client, tag)
        except Exception as exc:
            self._log_soon(f"the kill of operation {tag} failed: {_message(exc)}")
            raise
        if found:
            self._log_soon(f"killed operation {tag} on the server")
            return
        # Nothing to kill: it finished (fully applied) just before the kill looked, or it had not reached
        # the server yet. Either way claiming it was killed would be wrong.
        self.kill_found_nothing = True
        self._log_soon(f"the kill found no running operation {tag} on the server: {NOTHING_KILLED}")

    def _log_soon(self, message: str) -> None:
        self.loop.call_soon_threadsafe(self.run.log, message, LogLevel.warn)

    async def run_all(self) -> TargetResult:
        result = await super().run_all()
        if self.kill_found_nothing and result.status in (TaskStatus.canceled, TaskStatus.timeout):
            result.error += f"; the kill found no running operation on the server: {NOTHING_KILLED}"
        return result

    def message(self, exc: BaseException) -> str:
        return _message(exc)

    def progress(self, entry: dict[str, Any]) -> str:
        if "inserted_count" in entry:
            return f"inserted {entry['inserted_count']}"
        if "matched_count" in entry:
            return f"matched {entry['matched_count']}, modified {entry['modified_count']}"
        return f"deleted {entry.get('deleted_count', 0)}"

    def details(self, entry: dict[str, Any]) -> list[str]:
        labels = (
            ("inserted_count", "Inserted"),
            ("matched_count", "Matched"),
            ("modified_count", "Modified"),
            ("deleted_count", "Deleted"),
        )
        lines = [f"{label}: {entry[key]}" for key, label in labels if key in entry]
        if entry.get("inserted_ids_truncated"):
            lines.append(f"Inserted IDs: first {len(entry['inserted_ids'])} listed (cut at max_rows)")
        return lines
