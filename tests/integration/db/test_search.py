"""`elasticsearch` against osmem-server, an in-memory OpenSearch-compatible server (or the server at
TIANGONG_TEST_ES_URL), and, for the elasticsearch-py flavor, at the wire against FakeElasticsearch."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from executors.base import Outcome
from executors.registry import get_executor
from tests.servers import free_port
from tests.servers.search import FakeElasticsearch, SearchServer, self_signed_tls
from tests.unit.executors.harness import Harness, cancel_when, make_task, run_task
from wire.tasks import TaskRequest, TaskStatus

PASSWORD = "Tg-search-pw-5521"
API_KEY = "VGc6c2VhcmNoLWFwaS1rZXk="


@pytest.fixture
def index(search: SearchServer) -> Iterator[str]:
    """A fresh index name, deleted afterwards."""
    name = f"tg-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        search.request("DELETE", f"/{name}")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


@pytest.fixture
def fake() -> Iterator[FakeElasticsearch]:
    with FakeElasticsearch() as server:
        yield server


def run(
    command: Any, tmp_path: Path, *, setup: Callable[[Harness], None] | None = None, **params: Any
) -> tuple[Outcome, Harness]:
    text = command if isinstance(command, str) else json.dumps(command)
    return run_task(make_task(text, type="elasticsearch", **params), tmp_path, setup=setup)


def log_text(h: Harness) -> str:
    return "\n".join(message for _, message in h.lines)


def get_doc(search: SearchServer, index: str, doc_id: str) -> dict[str, Any] | None:
    try:
        return dict(search.request("GET", f"/{index}/_doc/{doc_id}")["_source"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def count(search: SearchServer, index: str) -> int:
    search.request("POST", f"/{index}/_refresh")
    return int(search.request("GET", f"/{index}/_count")["count"])


def test_bulk_applies_every_action(search: SearchServer, index: str, tmp_path: Path) -> None:
    actions = [
        {"index": {"_id": "1", "_source": {"name": "a", "n": 1}}},
        {"index": {"_id": "2", "_source": {"name": "b", "n": 2}}},
        {"create": {"_id": "3", "_source": {"name": "c", "n": 3}}},
        {"update": {"_id": "1", "doc": {"n": 10}}},
        {"delete": {"_id": "2"}},
    ]
    out, h = run({"operation": "bulk", "index": index, "actions": actions}, tmp_path, target=search.target())

    assert out.status == TaskStatus.success, out.error
    (entry,) = out.data
    assert {k: entry[k] for k in ("order", "operation", "index", "items", "succeeded", "failed", "failed_items")} == {
        "order": 1,
        "operation": "bulk",
        "index": index,
        "items": 5,
        "succeeded": 5,
        "failed": 0,
        "failed_items": [],
    }
    assert entry["results"] == {"created": 3, "updated": 1, "deleted": 1}
    assert get_doc(search, index, "1") == {"name": "a", "n": 10}
    assert get_doc(search, index, "2") is None
    assert f"Operation: bulk\nIndex: {index}\nStatus: Execute Successfully\nItems: 5\nSucceeded: 5\nFailed: 0\n" in (
        out.result
    )
    assert re.search(rf"^\[1/1\] bulk {index}: 5 items, 0 failed in \d+ ms$", log_text(h), re.M)


def test_bulk_item_errors_fail_the_task_and_list_the_items(search: SearchServer, index: str, tmp_path: Path) -> None:
    search.request("PUT", f"/{index}/_doc/1?refresh=true", {"name": "old"})
    actions = [
        {"create": {"_id": "1", "_source": {"name": "again"}}},  # exists: 409
        {"index": {"_id": "2", "_source": {"name": "fine"}}},
        {"update": {"_id": "404", "doc": {"name": "missing"}}},  # no such document: 404
    ]
    out, _ = run({"operation": "bulk", "index": index, "actions": actions}, tmp_path, target=search.target())

    assert out.status == TaskStatus.failed
    assert (
        out.error
        == f"operation 1 of 1 (bulk {index}) failed: 2 of 3 bulk items failed; the 1 that succeeded stay applied"
    )
    failed = out.data[0]["failed_items"]
    assert [(f["item"], f["action"], f["index"], f["id"], f["status"]) for f in failed] == [
        (0, "create", index, "1", 409),
        (2, "update", index, "404", 404),
    ]
    assert failed[0]["error"].startswith("version_conflict_engine_exception: ")
    assert failed[1]["error"].startswith("document_missing_exception: ")
    assert f"  actions[0] create {index}/1: 409 version_conflict_engine_exception: " in out.result
    assert f"  actions[2] update {index}/404: 404 document_missing_exception: " in out.result
    assert get_doc(search, index, "2") == {"name": "fine"}  # the items that succeeded stay applied
    assert get_doc(search, index, "1") == {"name": "old"}


def test_index_update_and_delete_by_query(search: SearchServer, index: str, tmp_path: Path) -> None:
    ops = [
        {"operation": "index", "index": index, "id": "7", "doc": {"kind": "a", "n": 1}},
        {"operation": "index", "index": index, "doc": {"kind": "b"}, "refresh": True},
        {"operation": "update", "index": index, "id": 7, "doc": {"n": 2}},
        {"operation": "delete_by_query", "index": index, "query": {"term": {"kind": "b"}}, "refresh": True},
    ]
    out, h = run(ops, tmp_path, target=search.target())

    assert out.status == TaskStatus.success, out.error
    assert [(e["operation"], e.get("result")) for e in out.data[:3]] == [
        ("index", "created"),
        ("index", "created"),
        ("update", "updated"),
    ]
    assert out.data[1]["id"]  # the server's generated id is reported
    assert (out.data[3]["deleted"], out.data[3]["total"]) == (1, 1)
    assert get_doc(search, index, "7") == {"kind": "a", "n": 2}
    assert count(search, index) == 1
    assert "[4/4] delete_by_query" in log_text(h)
    assert "Operation: delete_by_query\nIndex: " in out.result and "Deleted: 1\nTotal: 1\n" in out.result


def test_operations_from_a_zip_file(search: SearchServer, index: str, tmp_path: Path) -> None:
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("README.txt", "not JSON")
        zf.writestr("es/ops.json", json.dumps({"operation": "index", "index": index, "id": "1", "doc": {"a": 1}}))
    task = make_task(type="elasticsearch", file_id="file-9", target=search.target())
    out, h = run_task(task, tmp_path, setup=lambda h: h.files.update({"file-9": archive}))

    assert out.status == TaskStatus.success, out.error
    assert get_doc(search, index, "1") == {"a": 1}
    assert f"1 operation from file-9:es/ops.json on {search.host}:{search.port}" in log_text(h)
    assert out.result.endswith("Summary: 1 operation; 1 done\n")


def test_stops_at_the_first_failure(search: SearchServer, index: str, tmp_path: Path) -> None:
    ops = [
        {"operation": "index", "index": index, "id": "1", "doc": {"a": 1}},
        {"operation": "update", "index": index, "id": "missing", "doc": {"a": 2}},
        {"operation": "index", "index": index, "id": "3", "doc": {"a": 3}},
    ]
    out, _ = run(ops, tmp_path, target=search.target())

    assert out.status == TaskStatus.failed
    assert out.error.startswith(f"operation 2 of 3 (update {index}) failed: HTTP 404: document_missing_exception")
    assert out.error.endswith("; operation 1 before it stays applied (operations are not transactional)")
    assert get_doc(search, index, "1") == {"a": 1} and get_doc(search, index, "3") is None
    assert "; 1 not run; operations are not transactional" in out.result


def test_cancel_between_operations(search: SearchServer, index: str, tmp_path: Path) -> None:
    def cancel_after_first(h: Harness, line: str) -> None:
        if line.startswith("[1/2]"):
            h.cancel_event.set()

    ops = [
        {"operation": "index", "index": index, "id": "1", "doc": {"a": 1}},
        {"operation": "index", "index": index, "id": "2", "doc": {"a": 2}},
    ]
    out, _ = run(ops, tmp_path, target=search.target(), setup=lambda h: setattr(h, "on_line", cancel_after_first))

    assert out.status == TaskStatus.canceled
    assert out.error.startswith(f"canceled before operation 2 of 2 (index {index})")
    assert get_doc(search, index, "1") == {"a": 1} and get_doc(search, index, "2") is None


def test_match_all_delete_needs_allow_all(search: SearchServer, index: str, tmp_path: Path) -> None:
    op = {"operation": "delete_by_query", "index": index, "query": {"match_all": {}}, "refresh": True}
    with pytest.raises(ValueError, match=r"^command.query: match_all deletes every document; set exec_options"):
        validate(json.dumps(op), target={"host": "es1"})

    search.request("PUT", f"/{index}/_doc/1?refresh=true", {"a": 1})
    search.request("PUT", f"/{index}/_doc/2?refresh=true", {"a": 2})
    out, _ = run(op, tmp_path, target=search.target(), exec_options={"allow_all": True})
    assert out.status == TaskStatus.success, out.error
    assert out.data[0]["deleted"] == 2
    assert count(search, index) == 0


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_connection_refused_fails_fast_without_the_password(flavor: str, tmp_path: Path) -> None:
    port = free_port()
    target = {"host": "127.0.0.1", "port": port, "user": "elastic", "password": PASSWORD, "flavor": flavor}
    started = time.monotonic()
    out, h = run({"operation": "index", "index": "i", "doc": {"a": 1}}, tmp_path, target=target)

    assert out.status == TaskStatus.failed
    assert out.error.startswith(f"operation 1 of 1 (index i) failed: cannot connect to 127.0.0.1:{port}: ")
    assert "refused" in out.error.lower()
    assert time.monotonic() - started < 5  # no retries (seed 004)
    assert PASSWORD not in out.error + out.result + json.dumps(out.data) + log_text(h)


def test_elasticsearch_flavor_bulk_at_the_wire(fake: FakeElasticsearch, tmp_path: Path) -> None:
    actions = [
        {"index": {"_id": "1", "_source": {"a": 1}}},
        {"create": {"_id": "fail-2", "_source": {"a": 2}}},
        {"update": {"_id": 3, "doc": {"a": 3}}},
        {"delete": {"_id": "4", "_index": "other"}},
    ]
    target = {"host": "127.0.0.1", "port": fake.port, "user": "elastic", "password": PASSWORD}
    out, _ = run(
        {"operation": "bulk", "index": "logs", "actions": actions, "refresh": "wait_for"}, tmp_path, target=target
    )

    (req,) = fake.requests
    assert (req.method, req.path) == ("PUT", "/logs/_bulk?refresh=wait_for")
    assert req.headers["content-type"] == "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(f"elastic:{PASSWORD}".encode()).decode()
    assert req.json_lines() == [
        {"index": {"_index": "logs", "_id": "1"}},
        {"a": 1},
        {"create": {"_index": "logs", "_id": "fail-2"}},
        {"a": 2},
        {"update": {"_index": "logs", "_id": "3"}},
        {"doc": {"a": 3}},
        {"delete": {"_index": "other", "_id": "4"}},
    ]
    assert out.status == TaskStatus.failed
    assert out.data[0]["failed_items"] == [
        {
            "item": 1,
            "action": "create",
            "index": "logs",
            "id": "fail-2",
            "status": 409,
            "error": "version_conflict_engine_exception: [fail-2]: version conflict",
        }
    ]
    assert PASSWORD not in out.error + out.result


def test_elasticsearch_flavor_single_document_requests_at_the_wire(fake: FakeElasticsearch, tmp_path: Path) -> None:
    ops = [
        {"operation": "update", "index": "logs", "id": "1", "doc": {"a": 2}},
        {"operation": "delete_by_query", "index": "logs", "query": {"term": {"a": 2}}, "refresh": True},
        {"operation": "index", "index": "logs", "id": "7", "doc": {"b": 1}},
        {"operation": "index", "index": "logs", "doc": {"b": 2}},
    ]
    out, h = run(ops, tmp_path, target={"host": "127.0.0.1", "port": fake.port, "api_key": API_KEY})

    assert out.status == TaskStatus.success, out.error
    assert [(r.method, r.path, json.loads(r.body)) for r in fake.requests] == [
        ("POST", "/logs/_update/1", {"doc": {"a": 2}}),
        ("POST", "/logs/_delete_by_query?refresh=true", {"query": {"term": {"a": 2}}}),
        ("PUT", "/logs/_doc/7", {"b": 1}),
        ("POST", "/logs/_doc", {"b": 2}),
    ]
    assert {r.headers["authorization"] for r in fake.requests} == {f"ApiKey {API_KEY}"}
    assert [e.get("result") for e in out.data] == ["updated", None, "created", "created"]
    assert out.data[1]["deleted"] == 2 and out.data[3]["id"] == "generated-1"
    assert API_KEY not in out.result + json.dumps(out.data) + log_text(h)


def test_opensearch_flavor_sends_the_api_key_too(tmp_path: Path) -> None:
    with FakeElasticsearch(product_header=False) as fake:
        target = {"host": "127.0.0.1", "port": fake.port, "api_key": API_KEY, "flavor": "opensearch"}
        out, _ = run({"operation": "update", "index": "logs", "id": "1", "doc": {"a": 2}}, tmp_path, target=target)

    assert out.status == TaskStatus.success, out.error
    (req,) = fake.requests
    assert (req.method, req.path, req.headers["authorization"]) == ("POST", "/logs/_update/1", f"ApiKey {API_KEY}")


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_timeout_ms_ends_a_request_that_takes_too_long(flavor: str, tmp_path: Path) -> None:
    with FakeElasticsearch(stall=True) as fake:
        target = {"host": "127.0.0.1", "port": fake.port, "flavor": flavor}
        started = time.monotonic()
        out, h = run(
            [
                {"operation": "index", "index": "logs", "doc": {"a": 1}},
                {"operation": "index", "index": "logs", "doc": {}},
            ],
            tmp_path,
            target=target,
            exec_options={"timeout_ms": 300},
        )
        elapsed = time.monotonic() - started

    assert out.status == TaskStatus.timeout
    assert out.error == "operation 1 of 2 (index logs) stopped: timeout; it may have been applied in part"
    # The deadline, then the task-cancel attempt (the stalled fake does not answer it either, so its own
    # 2 s limit ends it), while the driver's own timeout ends the request one second after the deadline.
    assert elapsed < 5
    ops = [r for r in fake.requests if not r.path.startswith("/_tasks")]
    assert len(ops) == 1  # the second operation never started
    assert "[1/2] index logs: stopped: timeout" in log_text(h)


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_cancel_cancels_the_server_task_carrying_the_operations_opaque_id(flavor: str, tmp_path: Path) -> None:
    """At the wire, against FakeElasticsearch: the delete_by_query carries `X-Opaque-Id`, and cancel lists
    the server's tasks and cancels the one with that id. The fake holds the request as a running task, lists
    it as Elasticsearch's `GET _tasks?detailed` does and ends it only when its cancel arrives; that a real
    cluster then stops deleting is Elasticsearch's part, not shown here."""
    with FakeElasticsearch(hold="_delete_by_query") as fake:
        target = {"host": "127.0.0.1", "port": fake.port, "flavor": flavor}
        op = {"operation": "delete_by_query", "index": "logs", "query": {"term": {"app": "x"}}}
        started = time.monotonic()
        out, _ = run([op, {**op, "index": "other"}], tmp_path, target=target, setup=cancel_when(fake.holding))
        elapsed = time.monotonic() - started
        requests = list(fake.requests)

    assert out.status == TaskStatus.canceled
    assert out.error.startswith("operation 1 of 2 (delete_by_query logs) stopped: canceled")
    assert elapsed < 5  # the fake answers once canceled: no waiting out the interrupt grace
    dbq, listing, cancel = requests
    assert dbq.path.startswith("/logs/_delete_by_query") and dbq.headers["x-opaque-id"] == "tiangong:task-1:1"
    assert (listing.method, listing.path.split("?")[0]) == ("GET", "/_tasks")
    assert "detailed=true" in listing.path
    assert (cancel.method, unquote(cancel.path.split("?")[0])) == ("POST", "/_tasks/fake-node:1/_cancel")


def test_a_server_that_is_not_elasticsearch_gets_a_hint(tmp_path: Path) -> None:
    with FakeElasticsearch(product_header=False) as fake:
        target = {"host": "127.0.0.1", "port": fake.port}
        out, _ = run({"operation": "index", "index": "logs", "doc": {"a": 1}}, tmp_path, target=target)

    assert out.status == TaskStatus.failed
    assert out.error.endswith('the server is not Elasticsearch; for OpenSearch set target.flavor to "opensearch"')


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_https_checks_the_certificate_unless_verify_tls_is_off(flavor: str, tmp_path: Path) -> None:
    with FakeElasticsearch(tls=self_signed_tls(tmp_path)) as fake:
        target = {"host": "127.0.0.1", "port": fake.port, "scheme": "https", "flavor": flavor}
        op = {"operation": "index", "index": "logs", "id": "1", "doc": {"a": 1}}
        refused, _ = run(op, tmp_path, target=target)
        trusted, _ = run(op, tmp_path, target={**target, "verify_tls": False})

    assert refused.status == TaskStatus.failed
    assert f"cannot connect to 127.0.0.1:{fake.port}: " in refused.error
    assert "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert trusted.status == TaskStatus.success, trusted.error
    assert [r.path for r in fake.requests] == ["/logs/_doc/1"]  # only the trusting client got through


def validate(command: str, **params: Any) -> None:
    get_executor("elasticsearch").validate(TaskRequest(type="elasticsearch", command=command, params=params))


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("{", "command: not valid JSON: "),
        ('{"operation": "upsert", "index": "i"}', "command.operation: unknown operation 'upsert'; known: bulk, update"),
        ('{"operation": "update", "index": "i", "doc": {}}', "command.id: required for update"),
        ('{"operation": "index", "index": "", "doc": {}}', "command.index: an index name is required"),
        ('{"operation": "index", "index": "i", "doc": []}', "command.doc: must be an object"),
        ('{"operation": "index", "index": "i", "doc": {}, "ttl": 1}', "command.ttl: unknown field for index"),
        ('{"operation": "bulk", "index": "i", "actions": []}', "command.actions: a non-empty list of actions"),
        ('[{"operation": "bulk", "index": "i", "actions": [{"upsert": {}}]}]', "command[0].actions[0]: must be one of"),
        ('{"operation": "bulk", "index": "i", "actions": [{"delete": {}}]}', "command.actions[0].delete._id: required"),
        ('{"operation": "bulk", "index": "i", "actions": [{"index": {"_id": "1"}}]}', "command.actions[0].index: give"),
        ('{"operation": "delete_by_query", "index": "i", "query": {}}', "command.query: a non-empty query object"),
        (
            '{"operation": "delete_by_query", "index": "i", "query": {"term": {"a": 1}}, "refresh": "wait_for"}',
            "command.refresh: must be true or false",
        ),
    ],
)
def test_validation_names_the_field(command: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        validate(command, target={"host": "es1"})
    assert str(err.value).startswith(message)


def test_the_cloud_validates_without_importing_the_clients() -> None:
    code = (
        "import sys\n"
        "from executors.registry import get_executor\n"
        "from wire.tasks import TaskRequest\n"
        'cmd = \'{"operation": "index", "index": "i", "doc": {"a": 1}}\'\n'
        "get_executor('elasticsearch').validate(TaskRequest(type='elasticsearch', command=cmd,"
        " params={'target': {'host': 'h'}}))\n"
        "print(sorted(m for m in ('elasticsearch', 'opensearchpy', 'elastic_transport') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
