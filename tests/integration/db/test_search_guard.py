"""The delete_by_query guard against a real OpenSearch-compatible server (osmem-server, see
tests/servers/search.py): a query that matches everything is refused before anything runs; one that
narrows (even `exists`) runs and spares the rest."""

from __future__ import annotations

import json
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.services.errors import BadRequest
from cloud.services.tasks import validate_request
from tests.servers.search import SearchServer
from tests.unit.executors.harness import make_task, run_task
from wire.tasks import TaskRequest, TaskStatus


@pytest.fixture
def index(search: SearchServer) -> Iterator[str]:
    name = f"tg-{uuid.uuid4().hex[:10]}"
    for i, doc in enumerate([{"a": 1, "gone": True}, {"a": 2}, {"a": 3}], start=1):
        search.request("PUT", f"/{name}/_doc/{i}?refresh=true", doc)
    yield name
    try:
        search.request("DELETE", f"/{name}")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


def _ids(search: SearchServer, index: str) -> list[str]:
    search.request("POST", f"/{index}/_refresh")
    hits = search.request("POST", f"/{index}/_search", {"query": {"match_all": {}}, "size": 100})["hits"]["hits"]
    return sorted(h["_id"] for h in hits)


def _delete(index: str, query: Any) -> dict[str, Any]:
    return {"operation": "delete_by_query", "index": index, "query": query, "refresh": True}


@pytest.mark.parametrize(
    "query",
    [{"bool": {}}, {"bool": {"must_not": {"match_none": {}}}}, {"query_string": {"query": "*"}}],
)
def test_match_everything_queries_are_a_400(query: Any) -> None:
    req = TaskRequest(type="elasticsearch", command=json.dumps(_delete("i", query)), params={"target": {"host": "es"}})
    with pytest.raises(
        BadRequest, match=r"^command.query: .* deletes every document; set exec_options.allow_dangerous"
    ):
        validate_request(req)


def test_a_file_with_a_bool_everything_delete_runs_nothing(search: SearchServer, index: str, tmp_path: Path) -> None:
    ops = [{"operation": "index", "index": index, "id": "4", "doc": {"a": 4}}, _delete(index, {"bool": {}})]
    script = tmp_path / "ops.json"
    script.write_text(json.dumps(ops))
    task = make_task(type="elasticsearch", file_id="file-1", target=search.target())
    out, _ = run_task(task, tmp_path, setup=lambda h: h.files.update({"file-1": script}))

    assert out.status == TaskStatus.failed
    assert out.error.startswith("file-1[1].query: a bool with no narrowing")
    assert _ids(search, index) == ["1", "2", "3"]  # not even the index operation ran


def test_exists_is_not_everything(search: SearchServer, index: str, tmp_path: Path) -> None:
    op = _delete(index, {"exists": {"field": "gone"}})
    out, _ = run_task(make_task(json.dumps(op), type="elasticsearch", target=search.target()), tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert out.data[0]["deleted"] == 1 and _ids(search, index) == ["2", "3"]


@pytest.mark.parametrize("option", ["allow_dangerous", "allow_all"])
def test_allow_dangerous_or_its_older_name_lets_it_through(
    option: str, search: SearchServer, index: str, tmp_path: Path
) -> None:
    op = json.dumps(_delete(index, {"bool": {}}))
    task = make_task(op, type="elasticsearch", target=search.target(), exec_options={option: True})
    out, _ = run_task(task, tmp_path)
    assert out.status == TaskStatus.success, out.error
    assert out.data[0]["deleted"] == 3 and _ids(search, index) == []
