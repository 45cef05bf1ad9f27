"""`elasticsearch` (seed 004 §4.4): bulk, update, delete_by_query and index, as JSON operations.

`target.flavor` picks the client: elasticsearch-py 8 refuses a server that does not say it is Elasticsearch
(the `X-Elastic-Product` header), and OpenSearch refuses its compatibility media types, so each needs its
own. Operations run in order and are not transactional; a bulk whose items fail fails the task.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any, ClassVar
from urllib.parse import quote

from executors.db import operations, pools
from executors.db.base import DbExecutor, TargetResult, TargetRun
from executors.db.everything import es_matches_everything
from executors.db.params import DbParams, Target

OPERATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # operation: (required fields, optional fields)
    "bulk": (("index", "actions"), ("refresh",)),
    "update": (("index", "id", "doc"), ("refresh",)),
    "delete_by_query": (("index", "query"), ("refresh",)),
    "index": (("index", "doc"), ("id", "refresh")),
}
ACTIONS: dict[str, tuple[str, ...]] = {
    "index": ("_id", "_index", "_source", "doc"),
    "create": ("_id", "_index", "_source", "doc"),
    "update": ("_id", "_index", "doc", "doc_as_upsert"),
    "delete": ("_id", "_index"),
}
CANCEL_TIMEOUT_SECONDS = 2.0
"""Listing and canceling a stopped operation's server tasks may take this long."""
MAX_ITEMS_IN_TEXT = 20
"""Failed bulk items listed in the result text; `data` keeps up to `exec_options.max_rows` of them."""


def parse_operations(text: str, root: str, allow_all: bool) -> list[Any]:
    """The checked operations (one object or a list); ValueError names the field."""
    return operations.parse_operations(text, root, partial(_check, allow_all=allow_all))


def _check(op: Any, where: str, *, allow_all: bool) -> None:
    if not isinstance(op, dict):
        raise ValueError(f"{where}: must be an object with an operation")
    name = op.get("operation")
    if name not in OPERATIONS:
        got = f"unknown operation {name!r}" if "operation" in op else "required"
        raise ValueError(f"{where}.operation: {got}; known: {', '.join(OPERATIONS)}")
    required, optional = OPERATIONS[name]
    for key in op:
        if key != "operation" and key not in required + optional:
            raise ValueError(f"{where}.{key}: unknown field for {name}; known: {', '.join(required + optional)}")
    for key in required:
        if key not in op:
            raise ValueError(f"{where}.{key}: required for {name}")
    if not isinstance(op["index"], str) or not op["index"].strip():
        raise ValueError(f"{where}.index: an index name is required")
    if "id" in op:
        _check_id(op["id"], f"{where}.id")
    if "doc" in op and not isinstance(op["doc"], dict):
        raise ValueError(f"{where}.doc: must be an object")
    refresh = op.get("refresh", False)
    if not isinstance(refresh, bool) and (refresh != "wait_for" or name == "delete_by_query"):
        allowed = "true or false" if name == "delete_by_query" else 'true, false or "wait_for"'
        raise ValueError(f"{where}.refresh: must be {allowed}")
    if name == "delete_by_query":
        query = op["query"]
        if not isinstance(query, dict) or not query:
            raise ValueError(f"{where}.query: a non-empty query object is required")
        why = es_matches_everything(query)
        if why and not allow_all:
            raise ValueError(
                f"{where}.query: {why} deletes every document; set exec_options.allow_dangerous to allow it"
            )
    if name == "bulk":
        actions = op["actions"]
        if not isinstance(actions, list) or not actions:
            raise ValueError(f"{where}.actions: a non-empty list of actions is required")
        for j, action in enumerate(actions):
            _check_action(action, f"{where}.actions[{j}]")


def _check_action(action: Any, where: str) -> None:
    if not isinstance(action, dict) or len(action) != 1 or next(iter(action)) not in ACTIONS:
        raise ValueError(
            f'{where}: must be one of {", ".join(ACTIONS)} with its body, e.g. {{"index": {{"_id": "1", '
            f'"_source": {{...}}}}}}'
        )
    kind, body = next(iter(action.items()))
    if not isinstance(body, dict):
        raise ValueError(f"{where}.{kind}: must be an object")
    for key in body:
        if key not in ACTIONS[kind]:
            raise ValueError(f"{where}.{kind}.{key}: unknown field; known: {', '.join(ACTIONS[kind])}")
    if "_id" in body:
        _check_id(body["_id"], f"{where}.{kind}._id")
    elif kind in ("update", "delete"):
        raise ValueError(f"{where}.{kind}._id: required for {kind}")
    if kind != "delete":
        sources = [k for k in ("_source", "doc") if k in body]
        if len(sources) != 1 or not isinstance(body[sources[0]], dict):
            raise ValueError(f"{where}.{kind}: give the document as an object in _source (or doc)")


def _check_id(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise ValueError(f"{where}: must be a non-empty string or a number")


def _bulk_lines(op: dict[str, Any]) -> list[dict[str, Any]]:
    """Seed 004's actions as the bulk API's action/source line pairs."""
    lines: list[dict[str, Any]] = []
    for action in op["actions"]:
        kind, body = next(iter(action.items()))
        meta = {"_index": body.get("_index", op["index"])}
        if "_id" in body:
            meta["_id"] = str(body["_id"])
        lines.append({kind: meta})
        source = body.get("_source", body.get("doc"))
        if kind == "update":
            lines.append(
                {"doc": source, **({"doc_as_upsert": body["doc_as_upsert"]} if "doc_as_upsert" in body else {})}
            )
        elif kind != "delete":
            lines.append(source)
    return lines


def _new_client(target: Target) -> Any:
    """A client for one target; it never retries (seed 004: a connection failure is reported at once)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    url = f"{target.scheme}://{host}:{target.port}"
    common: dict[str, Any] = {"verify_certs": target.verify_tls, "max_retries": 0, "retry_on_timeout": False}
    if target.scheme == "https":
        common["ssl_show_warn"] = False  # verify_tls: false is the caller's explicit choice, not a surprise
    if target.flavor == "opensearch":
        from opensearchpy import OpenSearch

        kw: dict[str, Any] = {"hosts": [url], "pool_maxsize": pools.MAX_OPEN, **common}
        if target.api_key:  # opensearch-py has no api_key option; the header is what Elasticsearch's sends
            kw["headers"] = {"Authorization": f"ApiKey {target.api_key}"}
        elif target.user:
            kw["http_auth"] = (target.user, target.password or "")
        return OpenSearch(**kw)
    from elasticsearch import Elasticsearch

    kw = {"hosts": [url], "connections_per_node": pools.MAX_OPEN, **common}
    if target.api_key:
        kw["api_key"] = target.api_key
    elif target.user:
        kw["basic_auth"] = (target.user, target.password or "")
    return Elasticsearch(**kw)


_CLIENTS: pools.PoolCache[Any] = pools.PoolCache(lambda c: c.close())
"""One client (with its connection pool) per target, flavor and TLS setting; idle ones are closed."""


def _send(client: Any, flavor: str, op: dict[str, Any], timeout: float, tag: str) -> dict[str, Any]:
    """One request (worker thread) with `X-Opaque-Id: <tag>`; `timeout` bounds it in seconds."""
    name, index = op["operation"], op["index"]
    doc_id = str(op["id"]) if "id" in op else None
    if flavor == "opensearch":
        params: dict[str, Any] = {"request_timeout": timeout}
        if "refresh" in op:
            params["refresh"] = str(op["refresh"]).lower()
        if name == "bulk":
            return dict(client.bulk(body=_bulk_lines(op), index=index, params=params, opaque_id=tag))
        if name == "update":
            return dict(client.update(index=index, id=doc_id, body={"doc": op["doc"]}, params=params, opaque_id=tag))
        if name == "delete_by_query":
            return dict(client.delete_by_query(index=index, body={"query": op["query"]}, params=params, opaque_id=tag))
        return dict(client.index(index=index, id=doc_id, body=op["doc"], params=params, opaque_id=tag))
    es = client.options(request_timeout=timeout, opaque_id=tag)
    extra = {"refresh": op["refresh"]} if "refresh" in op else {}
    if name == "bulk":
        return dict(es.bulk(index=index, operations=_bulk_lines(op), **extra).body)
    if name == "update":
        return dict(es.update(index=index, id=doc_id, doc=op["doc"], **extra).body)
    if name == "delete_by_query":
        return dict(es.delete_by_query(index=index, query=op["query"], **extra).body)
    return dict(es.index(index=index, id=doc_id, document=op["doc"], **extra).body)


def _cancel_tagged(client: Any, flavor: str, tag: str) -> list[str]:
    """Cancel the server's tasks whose X-Opaque-Id is `tag` (best effort): `_tasks/_cancel` cannot filter
    by it, so the detailed task list is read and each matching top-level task canceled (its children go
    with it). Bulk and index requests are not cancellable tasks; delete_by_query is. The ids canceled."""
    accept = {"accept": "application/json"}
    if flavor == "opensearch":
        listing = client.tasks.list(detailed=True, params={"request_timeout": CANCEL_TIMEOUT_SECONDS})
    else:
        # The low-level call: elasticsearch-py's tasks.list/cancel warn (technical preview) on every use.
        client = client.options(request_timeout=CANCEL_TIMEOUT_SECONDS)
        listing = client.perform_request("GET", "/_tasks", params={"detailed": "true"}, headers=accept).body
    ids = [
        task_id
        for node in (listing.get("nodes") or {}).values()
        for task_id, task in (node.get("tasks") or {}).items()
        if (task.get("headers") or {}).get("X-Opaque-Id") == tag
        and task.get("cancellable", True)
        and not task.get("parent_task_id")
    ]
    for task_id in ids:
        if flavor == "opensearch":
            client.tasks.cancel(task_id=task_id, params={"request_timeout": CANCEL_TIMEOUT_SECONDS})
        else:
            client.perform_request("POST", f"/_tasks/{quote(task_id, safe='')}/_cancel", headers=accept)
    return ids


def _reason(error: Any) -> str:
    """`type: reason` of an Elasticsearch error object (or the text it is)."""
    if isinstance(error, dict):
        cause = error.get("caused_by")
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
        return text + (f" (caused by {_reason(cause)})" if isinstance(cause, dict) else "")
    return str(error)


def _message(exc: BaseException, label: str) -> str:
    """A client error as one line. Both clients name their classes alike, so the names tell the kind."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "UnsupportedProductError" in names:
        return 'the server is not Elasticsearch; for OpenSearch set target.flavor to "opensearch"'
    body = getattr(exc, "body", None) or getattr(exc, "info", None)
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {getattr(exc, 'status_code', '?')}: {_reason(body['error'])}"
    # elasticsearch-py keeps the cause in `message` (its str() is just "Connection error"), opensearch-py in `error`.
    detail = next(
        (v for v in (getattr(exc, "message", None), getattr(exc, "error", None)) if isinstance(v, str) and v), ""
    )
    detail = " ".join((detail or str(exc)).split()) or type(exc).__name__
    if "ConnectionTimeout" in names:
        return f"no answer from {label} in time: {detail}"
    if "ConnectionError" in names:  # also TLS failures, which both clients raise as connection errors
        return f"cannot connect to {label}: {detail}"
    return detail


def _summarize(name: str, resp: dict[str, Any], max_items: int) -> tuple[dict[str, Any], str]:
    """The entry's fields for one response, and what went wrong inside a successful request."""
    if name == "bulk":
        items = [(j, *next(iter(item.items()))) for j, item in enumerate(resp.get("items", []))]
        failed = [
            {
                "item": j,
                "action": kind,
                "index": r.get("_index"),
                "id": r.get("_id"),
                "status": r.get("status"),
                "error": _reason(r["error"]),
            }
            for j, kind, r in items
            if "error" in r
        ]
        results = Counter(str(r.get("result")) for _, _, r in items if "error" not in r)
        fields = {
            "items": len(items),
            "succeeded": len(items) - len(failed),
            "failed": len(failed),
            "results": dict(results),
            "failed_items": failed[:max_items],
        }
        kept = f"; the {len(items) - len(failed)} that succeeded stay applied" if len(failed) < len(items) else ""
        return fields, f"{len(failed)} of {len(items)} bulk items failed{kept}" if failed else ""
    if name == "delete_by_query":
        failures = [_reason(f.get("cause", f)) if isinstance(f, dict) else str(f) for f in resp.get("failures") or []]
        fields = {
            "deleted": resp.get("deleted", 0),
            "total": resp.get("total", 0),
            "version_conflicts": resp.get("version_conflicts", 0),
            "failures": failures[:max_items],
        }
        return fields, f"{len(failures)} documents could not be deleted: {failures[0]}" if failures else ""
    return {"id": resp.get("_id"), "result": resp.get("result"), "version": resp.get("_version")}, ""


class SearchExecutor(DbExecutor):
    """`elasticsearch` (also OpenSearch, with `target.flavor`)."""

    type: ClassVar[str] = "elasticsearch"

    def check_command(self, command: str, params: DbParams) -> None:
        parse_operations(command, "command", params.exec_options.allow_all)

    def driver_modules(self, targets: list[Target]) -> list[str]:
        return sorted({"opensearchpy" if t.flavor == "opensearch" else "elasticsearch" for t in targets})

    async def run_target(self, target: Target, run: TargetRun) -> TargetResult:
        def parse(text: str, root: str) -> list[dict[str, Any]]:
            return parse_operations(text, root, run.options.allow_all)

        ops = await operations.read_operations(target, run, parse, "URL", f" ({target.flavor})")
        if isinstance(ops, TargetResult):
            return ops
        key = (*target.pool_key(), target.scheme, target.flavor, target.verify_tls)
        with _CLIENTS.lease(key, lambda: _new_client(target)) as client:
            return await _Ops(client, ops, target, run).run_all()


class _Ops(operations.OperationLoop):
    """The operation loop on one cluster."""

    on = "index"
    on_label = "Index"

    def __init__(self, client: Any, ops: list[dict[str, Any]], target: Target, run: TargetRun) -> None:
        super().__init__(ops, target, run)
        self.client = client

    def apply(self, op: dict[str, Any], timeout: float, tag: str) -> tuple[dict[str, Any], str]:
        resp = _send(self.client, self.target.flavor, op, timeout, tag)
        return _summarize(op["operation"], resp, self.run.options.max_rows)

    def interrupt(self, tag: str) -> None:
        _cancel_tagged(self.client, self.target.flavor, tag)

    def message(self, exc: BaseException) -> str:
        return _message(exc, self.target.label)

    def progress(self, entry: dict[str, Any]) -> str:
        if "items" in entry:
            return f"{entry['items']} items, {entry['failed']} failed"
        if "deleted" in entry:
            return f"deleted {entry['deleted']} of {entry['total']}"
        return f"{entry.get('result')} (id {entry.get('id')})"

    def details(self, entry: dict[str, Any]) -> list[str]:
        if "items" in entry:
            lines = [f"Items: {entry['items']}", f"Succeeded: {entry['succeeded']}", f"Failed: {entry['failed']}"]
            shown = entry["failed_items"][:MAX_ITEMS_IN_TEXT]
            lines += [
                f"  actions[{f['item']}] {f['action']} {f['index']}/{f['id']}: {f['status']} {f['error']}"
                for f in shown
            ]
            if entry["failed"] > len(shown):
                lines.append(f"  ... and {entry['failed'] - len(shown)} more (see data)")
            return lines
        if "deleted" in entry:
            return [f"Deleted: {entry['deleted']}", f"Total: {entry['total']}"]
        if entry.get("result"):
            return [f"Id: {entry['id']}", f"Result: {entry['result']}"]
        return []
