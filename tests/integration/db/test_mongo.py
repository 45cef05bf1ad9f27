"""`mongo` against a real wire-protocol server: nx-27017, a MongoDB wire-protocol server, stands in for
mongod (or the MongoDB at TIANGONG_TEST_MONGO_URL). Every test works in a database of its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executors.base import Outcome
from executors.db.mongo import _client_options
from executors.db.params import parse_params, resolve_targets
from executors.registry import get_executor
from tests.integration.db.mongo_wire import MongoWireProxy
from tests.servers import free_port
from tests.servers.mongo import MongoServer
from tests.unit.executors.harness import Harness, cancel_when, make_task, run_task
from wire.tasks import TaskRequest, TaskStatus

PASSWORD = "Tg-m0ngo-pw-7781"


def run(
    command: Any, tmp_path: Path, *, setup: Callable[[Harness], None] | None = None, **params: Any
) -> tuple[Outcome, Harness]:
    text = command if isinstance(command, str) else json.dumps(command)
    return run_task(make_task(text, type="mongo", **params), tmp_path, setup=setup)


def log_text(h: Harness) -> str:
    return "\n".join(message for _, message in h.lines)


def insert(coll: str, *docs: dict[str, Any]) -> dict[str, Any]:
    return {"operation": "insert", "collection": coll, "documents": list(docs)}


def test_insert_update_delete_in_order(mongo: MongoServer, client: Any, db: str, tmp_path: Path) -> None:
    ops = [
        insert("users", {"name": "a", "n": 1}, {"name": "b", "n": 2}, {"_id": 7, "name": "c", "n": 2}),
        {"operation": "update", "collection": "users", "filter": {"n": 2}, "update": {"status": "active"}},
        {"operation": "delete", "collection": "users", "filter": {"name": "a"}},
    ]
    out, h = run(ops, tmp_path, target=mongo.target(db=db))

    assert out.status == TaskStatus.success, out.error
    first, second, third = out.data
    assert first["inserted_count"] == 3 and first["inserted_ids"][2] == 7
    assert all(isinstance(i, str) and len(i) == 24 for i in first["inserted_ids"][:2])  # ObjectIds, as text
    assert {k: second[k] for k in ("order", "operation", "collection", "matched_count", "modified_count")} == {
        "order": 2,
        "operation": "update",
        "collection": "users",
        "matched_count": 2,
        "modified_count": 2,
    }
    assert (third["deleted_count"], third["error"]) == (1, "")
    json.dumps(out.data)  # JSON-safe as it is
    # A plain update document is applied as $set: the other fields stay.
    docs = sorted(client[db].users.find({}, {"_id": 0}), key=lambda d: d["name"])
    assert docs == [{"name": "b", "n": 2, "status": "active"}, {"name": "c", "n": 2, "status": "active"}]
    assert (
        "Order ID: 1\nOperation: insert\nCollection: users\nStatus: Execute Successfully\nInserted: 3\n" in out.result
    )
    assert "Operation: update\nCollection: users\nStatus: Execute Successfully\nMatched: 2\nModified: 2\n" in out.result
    assert out.result.endswith("Summary: 3 operations; 3 done\n")
    assert re.search(r"^\[2/3\] update users: matched 2, modified 2 in \d+ ms$", log_text(h), re.M)


def test_inserted_ids_cut_at_max_rows_are_marked(mongo: MongoServer, client: Any, db: str, tmp_path: Path) -> None:
    ops = [insert("users", *({"_id": i} for i in range(5))), insert("users", {"_id": 9})]
    out, _ = run(ops, tmp_path, target=mongo.target(db=db), exec_options={"max_rows": 2})
    assert out.status == TaskStatus.success, out.error
    cut, whole = out.data
    assert (cut["inserted_count"], cut["inserted_ids"], cut["inserted_ids_truncated"]) == (5, [0, 1], True)
    assert (whole["inserted_ids"], whole["inserted_ids_truncated"]) == ([9], False)
    assert out.result.count("Inserted IDs: first 2 listed (cut at max_rows)") == 1
    assert client[db]["users"].count_documents({}) == 6


def test_operator_updates_go_as_given_and_extended_json_ids(
    mongo: MongoServer, client: Any, db: str, tmp_path: Path
) -> None:
    out, _ = run(insert("c", {"k": 1, "n": 1}, {"k": 2, "n": 1}), tmp_path, target=mongo.target(db=db))
    first_id = out.data[0]["inserted_ids"][0]
    ops = [
        {"operation": "update", "collection": "c", "filter": {"k": {"$gte": 1}}, "update": {"$inc": {"n": 5}}},
        {"operation": "delete", "collection": "c", "filter": {"_id": {"$oid": first_id}}},
    ]
    out, _ = run(ops, tmp_path, target=mongo.target(db=db))

    assert out.status == TaskStatus.success, out.error
    assert (out.data[0]["modified_count"], out.data[1]["deleted_count"]) == (2, 1)
    assert list(client[db].c.find({}, {"_id": 0})) == [{"k": 2, "n": 6}]


@pytest.mark.parametrize("verb", ["delete", "update"])
def test_empty_filter_is_refused_when_posted(verb: str) -> None:
    op = {"operation": verb, "collection": "users", "filter": {}} | ({"update": {"a": 1}} if verb == "update" else {})
    command = json.dumps([insert("users", {"a": 1}), op])
    with pytest.raises(ValueError) as err:
        validate(command, target={"host": "db1"})
    assert str(err.value) == (
        f"command[1].filter: an empty filter {verb}s every document; set exec_options.allow_dangerous to allow it"
    )
    validate(command, target={"host": "db1"}, exec_options={"allow_all": True})


def test_empty_filter_is_refused_on_the_agent_too(mongo: MongoServer, client: Any, db: str, tmp_path: Path) -> None:
    """A file_id is not read in the cloud, so the agent checks again before running anything."""
    client[db].users.insert_many([{"a": 1}, {"a": 2}])
    script = tmp_path / "ops.json"
    script.write_text(
        json.dumps([insert("users", {"a": 3}), {"operation": "delete", "collection": "users", "filter": {}}])
    )
    task = make_task(type="mongo", file_id="file-1", target=mongo.target(db=db))
    out, _ = run_task(task, tmp_path, setup=lambda h: h.files.update({"file-1": script}))

    assert out.status == TaskStatus.failed
    assert (
        out.error
        == "file-1[1].filter: an empty filter deletes every document; set exec_options.allow_dangerous to allow it"
    )
    assert client[db].users.count_documents({}) == 2  # not even the insert ran


def test_allow_all_lets_an_empty_filter_through(mongo: MongoServer, client: Any, db: str, tmp_path: Path) -> None:
    client[db].users.insert_many([{"a": 1}, {"a": 2}, {"a": 3}])
    ops = [
        {"operation": "update", "collection": "users", "filter": {}, "update": {"seen": True}},
        {"operation": "delete", "collection": "users", "filter": {}},
    ]
    out, _ = run(ops, tmp_path, target=mongo.target(db=db), exec_options={"allow_all": True})

    assert out.status == TaskStatus.success, out.error
    assert (out.data[0]["modified_count"], out.data[1]["deleted_count"]) == (3, 3)
    assert client[db].users.count_documents({}) == 0


def test_stops_at_the_first_failure_and_says_what_happened(
    mongo: MongoServer, client: Any, db: str, tmp_path: Path
) -> None:
    ops = [
        insert("users", {"_id": 1}),
        insert("users", {"_id": 2}, {"_id": 1}, {"_id": 3}),  # ordered: 2 goes in, the duplicate 1 stops it
        {"operation": "delete", "collection": "users", "filter": {"_id": 1}},
    ]
    out, h = run(ops, tmp_path, target=mongo.target(db=db))

    assert out.status == TaskStatus.failed
    assert out.error.startswith("operation 2 of 3 (insert users) failed: ")
    assert out.error.endswith(
        "(1 of 3 documents inserted before it); operation 1 before it stays applied (operations are not transactional)"
    )
    assert [(e["order"], e["inserted_count"], e["inserted_ids"]) for e in out.data] == [(1, 1, [1]), (2, 1, [2])]
    assert out.data[1]["error"] and not out.data[0]["error"]
    assert sorted(d["_id"] for d in client[db].users.find()) == [1, 2]  # the delete never ran
    assert "Status: Execute Failed\nInserted: 1\n" in out.result
    assert "; 1 not run; operations are not transactional: the ones done stay applied\n" in out.result
    assert re.search(r"^\[2/3\] insert users: failed: ", log_text(h), re.M)


def test_a_failing_update_warns_that_earlier_documents_stay_changed(
    mongo: MongoServer, client: Any, db: str, tmp_path: Path
) -> None:
    client[db].users.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": "two"}])
    op = {"operation": "update", "collection": "users", "filter": {"_id": {"$gte": 1}}, "update": {"$inc": {"n": 1}}}
    out, _ = run(op, tmp_path, target=mongo.target(db=db))

    assert out.status == TaskStatus.failed
    assert out.error.startswith("operation 1 of 1 (update users) failed: ")
    assert out.error.endswith("(documents updated before the error stay updated)")
    assert client[db].users.find_one({"_id": 2}) == {"_id": 2, "n": "two"}


def test_connection_refused_fails_fast_without_the_password(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    out, h = run(
        insert("users", {"a": 1}),
        tmp_path,
        target={"host": "127.0.0.1", "port": port, "user": "ops", "password": PASSWORD},
    )
    elapsed = time.monotonic() - started

    assert out.status == TaskStatus.failed
    assert out.error.startswith(f"cannot connect to 127.0.0.1:{port}/admin: ")
    assert "refused" in out.error.lower()
    assert elapsed < 5, "pymongo's own server selection would wait 10 s; the refusal must come at once"
    everything = out.error + out.result + json.dumps(out.data) + log_text(h)
    assert PASSWORD not in everything


def test_a_uri_as_host_is_refused_without_echoing_it(tmp_path: Path) -> None:
    out, h = run(
        insert("u", {"a": 1}), tmp_path, target={"host": f"mongodb://ops:{PASSWORD}@db1", "password": PASSWORD}
    )
    assert (out.status, out.error) == (TaskStatus.failed, "target.host: give a host name or address, not a URI")
    assert PASSWORD not in log_text(h)


def test_cancel_between_operations_stops_before_the_next(
    mongo: MongoServer, client: Any, db: str, tmp_path: Path
) -> None:
    def cancel_after_first(h: Harness, line: str) -> None:
        if line.startswith("[1/3]"):
            h.cancel_event.set()

    ops = [
        insert("users", {"_id": 1, "n": 1}),
        {"operation": "update", "collection": "users", "filter": {"_id": 1}, "update": {"n": 2}},
        insert("users", {"_id": 2}),
    ]
    out, _ = run(ops, tmp_path, target=mongo.target(db=db), setup=lambda h: setattr(h, "on_line", cancel_after_first))

    assert out.status == TaskStatus.canceled
    assert out.error == (
        "canceled before operation 2 of 3 (update users); operation 1 before it stays applied"
        " (operations are not transactional)"
    )
    assert list(client[db].users.find()) == [{"_id": 1, "n": 1}]
    assert len(out.data) == 1


def test_each_operation_carries_its_comment(mongo: MongoServer, client: Any, db: str, tmp_path: Path) -> None:
    """Through MongoWireProxy to nx-27017: the commands as pymongo really sends them."""
    with MongoWireProxy((mongo.host, mongo.port), hold="never") as proxy:
        ops = [
            insert("users", {"_id": 1}),
            {"operation": "update", "collection": "users", "filter": {"_id": 1}, "update": {"n": 2}},
            {"operation": "delete", "collection": "users", "filter": {"_id": 1}},
        ]
        out, _ = run(ops, tmp_path, target={"host": "127.0.0.1", "port": proxy.port, "db": db})
    assert out.status == TaskStatus.success, out.error
    sent = {verb: c["comment"] for c in proxy.commands for verb in ("insert", "update", "delete") if verb in c}
    assert sent == {"insert": "tiangong:task-1:1", "update": "tiangong:task-1:2", "delete": "tiangong:task-1:3"}


def test_cancel_kills_the_running_operation_found_by_its_comment(
    mongo: MongoServer, client: Any, db: str, tmp_path: Path
) -> None:
    """At the wire. nx-27017 finishes every operation at once and has neither `$currentOp` nor a working
    `killOp`, so MongoWireProxy holds the insert as a running operation, lists it for `$currentOp` and
    answers it with mongod's `Interrupted` once its `killOp` arrives. This shows the executor finds the
    operation by its comment and kills it, and ends `canceled` promptly; that mongod stops is MongoDB's part."""
    with MongoWireProxy((mongo.host, mongo.port), hold="tiangong:") as proxy:
        started = time.monotonic()
        target = {"host": "127.0.0.1", "port": proxy.port, "db": db}
        out, h = run(
            [insert("users", {"_id": 1}), insert("users", {"_id": 2})],
            tmp_path,
            target=target,
            setup=cancel_when(proxy.holding),
        )
        elapsed = time.monotonic() - started

    assert out.status == TaskStatus.canceled
    assert out.error == "operation 1 of 2 (insert users) stopped: canceled; it may have been applied in part"
    assert elapsed < 5  # answered as soon as the kill arrived, not after the interrupt's grace
    (current,) = [c for c in proxy.commands if "aggregate" in c]
    assert current["pipeline"] == [
        {"$currentOp": {"allUsers": True}},
        {"$match": {"command.comment": "tiangong:task-1:1"}},
    ]
    (kill,) = [c for c in proxy.commands if "killOp" in c]
    assert (kill["op"], kill["$db"]) == (1, "admin")
    assert client[db].users.count_documents({}) == 0  # the held insert never reached the server
    assert "[1/2] insert users: stopped: canceled" in log_text(h)


def test_kill_falls_back_to_the_currentop_command(client: Any) -> None:
    """nx-27017 refuses the `$currentOp` stage and answers the `currentOp` command with no operations:
    finding nothing to kill is not an error."""
    from executors.db.mongo import _kill_tagged

    assert _kill_tagged(client, "tiangong:no-such-task:1") == 0


def test_database_defaults_to_admin(mongo: MongoServer, client: Any, tmp_path: Path) -> None:
    coll = f"tg_{uuid.uuid4().hex[:10]}"
    try:
        out, h = run(insert(coll, {"a": 1}), tmp_path, target=mongo.target())
        assert out.status == TaskStatus.success, out.error
        assert client["admin"][coll].count_documents({}) == 1
        assert f"on {mongo.host}:{mongo.port}/admin" in log_text(h)
    finally:
        client["admin"].drop_collection(coll)


def test_target_db_wins_over_params_database(mongo: MongoServer, client: Any, db: str, tmp_path: Path) -> None:
    other = f"{db}_other"
    try:
        out, _ = run(insert("users", {"a": 1}), tmp_path, target=mongo.target(db=db), database=other)
        assert out.status == TaskStatus.success, out.error
        assert (client[db].users.count_documents({}), client[other].users.count_documents({})) == (1, 0)
        out, _ = run(insert("users", {"a": 2}), tmp_path, target=mongo.target(), database=other)
        assert client[other].users.count_documents({}) == 1  # params.database when the target names none
    finally:
        client.drop_database(other)


def test_two_databases_as_targets_report_each(mongo: MongoServer, client: Any, db: str, tmp_path: Path) -> None:
    second = f"{db}_b"
    client[second].users.insert_one({"_id": 1})  # the same insert then fails on the second target only
    try:
        targets = [mongo.target(db=db, name="first"), mongo.target(db=second, name="second")]
        out, h = run(insert("users", {"_id": 1}), tmp_path, targets=targets)

        assert out.status == TaskStatus.failed
        assert [(r["target"], r["status"]) for r in out.data] == [("first", "success"), ("second", "failed")]
        assert out.data[0]["results"][0]["inserted_ids"] == [1]
        assert out.error.startswith("second: operation 1 of 1 (insert users) failed: ")
        assert "=== Target: first (success) ===" in out.result and "=== Target: second (failed) ===" in out.result
        assert "[first] [1/1] insert users: inserted 1 in " in log_text(h)
        assert client[db].users.count_documents({}) == 1
    finally:
        client.drop_database(second)


def validate(command: str, **params: Any) -> None:
    get_executor("mongo").validate(TaskRequest(type="mongo", command=command, params=params))


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("not json", "command: not valid JSON: Expecting value"),
        ("[]", "command: the list of operations is empty"),
        (
            '{"operation": "upsert", "collection": "u"}',
            "command.operation: unknown operation 'upsert'; known: insert, update, delete",
        ),
        ('{"collection": "u"}', "command.operation: required; known: insert, update, delete"),
        ('[{"operation": "insert", "collection": "u", "documents": []}]', "command[0].documents: a non-empty list"),
        (
            '[{"operation": "insert", "collection": "u", "documents": [1]}]',
            "command[0].documents[0]: must be an object",
        ),
        ('{"operation": "insert", "documents": [{}]}', "command.collection: a collection name is required"),
        ('{"operation": "delete", "collection": "u", "filer": {"a": 1}}', "command.filer: unknown field for delete"),
        ('{"operation": "delete", "collection": "u"}', "command.filter: an object is required"),
        (
            '{"operation": "update", "collection": "u", "filter": {"a": 1}, "update": {"$set": {"b": 1}, "c": 2}}',
            "command.update: mixes operators ($set, $inc, ...) with plain fields",
        ),
    ],
)
def test_validation_names_the_field(command: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        validate(command, target={"host": "db1"})
    assert str(err.value).startswith(message)


def test_the_cloud_validates_without_importing_the_driver() -> None:
    code = (
        "import sys\n"
        "from executors.registry import get_executor\n"
        "from wire.tasks import TaskRequest\n"
        'cmd = \'{"operation": "delete", "collection": "u", "filter": {"a": 1}}\'\n'
        "get_executor('mongo').validate(TaskRequest(type='mongo', command=cmd, params={'target': {'host': 'h'}}))\n"
        "print(sorted(m for m in ('pymongo', 'bson') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_client_options_follow_seed_004_pool_and_tls() -> None:
    def options(**target: Any) -> dict[str, Any]:
        return _client_options(resolve_targets("mongo", parse_params({"target": {"host": "db1", **target}}), {})[0])

    plain = options(user="ops", password=PASSWORD)
    assert (plain["maxPoolSize"], plain["minPoolSize"], plain["authSource"], plain["username"]) == (
        10,
        0,
        "admin",
        "ops",
    )
    assert "tls" not in plain
    assert options(sslmode="require")["tlsAllowInvalidCertificates"] is True
    full = options(sslmode="verify-full")
    assert full["tls"] is True and "tlsAllowInvalidCertificates" not in full and "tlsAllowInvalidHostnames" not in full
    assert options(sslmode="verify-ca")["tlsAllowInvalidHostnames"] is True
