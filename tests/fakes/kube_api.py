"""A FAKE Kubernetes API server for tests: no real one can be installed on these machines.

It speaks the real REST protocol over HTTP (HTTPS given a server TLS context) on 127.0.0.1, so the
official `kubernetes` client (and its DynamicClient) runs unmodified against it: discovery (`/version`,
`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`; a CRD is preinstalled and a CRD created through
the API is served at once), GET/POST/PUT/DELETE, PATCH as apply-patch+yaml, strategic-merge, merge and
json-patch, bearer-token auth, and errors as Status objects (401, 403, 404, 409 AlreadyExists/Conflict,
415, 422 Invalid with causes). Tests steer it with `deny` (an RBAC refusal for a verb on a resource),
`add_account` (a second token whose requests a Role's rules allow or refuse, see kube_rbac) and
`stale_puts` (the next PUTs meet a concurrent write first, so their resourceVersion is stale and they
get 409). The main `token` is an administrator's: only `deny` limits it.
What it does not do is listed in kube_store and kube_catalog; nothing here runs controllers, so
workload status is simulated (see kube_catalog).
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from tests.fakes.kube_catalog import ResourceType, crd_manifest, group_list, resource_list
from tests.fakes.kube_rbac import Account, Decision, forbidden, verb_of
from tests.fakes.kube_store import ApiError, Store

SERVICE_ACCOUNT = "system:serviceaccount:tiangong:agent"
_PATCH_TYPES = {
    "application/strategic-merge-patch+json": "strategic",
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
}


@dataclass(frozen=True)
class Seen:
    """One request the fake answered, for tests to check what the client sent."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    code: int
    authorization: str = ""
    """The Authorization header as sent."""


@dataclass
class FakeKubeApi:
    """The fake server; `with FakeKubeApi() as api:` serves it on a free port until the block ends."""

    token: str = "fake-token-3f9a"
    store: Store = field(default_factory=Store)
    denied: set[tuple[str, str]] = field(default_factory=set)
    stale_puts: int = 0
    seen: list[Seen] = field(default_factory=list)
    accounts: dict[str, Account] = field(default_factory=dict)
    """Bearer token -> a service account limited to its Role's rules."""
    decisions: list[Decision] = field(default_factory=list)
    """Every authorisation made for an account in `accounts`."""
    tls: ssl.SSLContext | None = None
    """A server-side context: serve HTTPS, as a real API server (and the in-cluster config) requires."""

    def __post_init__(self) -> None:
        widgets = crd_manifest("example.com", "Widget", "widgets")
        self.store.create(
            self.store.type_of("apiextensions.k8s.io", "v1", "customresourcedefinitions"), "", widgets, "fake-bootstrap"
        )
        self._server: ThreadingHTTPServer | None = None

    # ---- test controls ---------------------------------------------------------------------------

    def deny(self, verb: str, plural: str) -> None:
        """Answer 403 Forbidden to `verb` (get, list, create, update, patch, delete) on `plural`."""
        self.denied.add((verb, plural))

    def add_account(self, token: str, account: Account) -> None:
        """Requests bearing `token` act as `account`: what its Role does not allow gets 403 Forbidden."""
        self.accounts[token] = account

    def requests(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]

    def write_kubeconfig(self, path: Path, *, namespace: str | None = None, token: str | None = None) -> Path:
        """A kubeconfig whose context `fake` points at this server (its namespace if given)."""
        context: dict[str, Any] = {"cluster": "fake", "user": "agent"}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "agent", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # ---- serving ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake is not started"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKubeApi:
        api = self

        class Handler(_Handler):
            fake = api

        self._server = server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            # The handshake happens in each request's thread (on first read), not in the accepting one.
            server.socket = self.tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        serve = lambda: server.serve_forever(poll_interval=0.05)  # noqa: E731 - shutdown() waits one poll
        threading.Thread(target=serve, name="fake-kube-api", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> tuple[int, Any]:
        """One request -> (HTTP code, JSON payload)."""
        scheme, _, token = str(headers.get("Authorization", "")).partition(" ")
        # The scheme is case-insensitive, as the real API server has it (the in-cluster config sends "bearer").
        account = self.accounts.get(token)
        if scheme.lower() != "bearer" or (token != self.token and account is None):
            return 401, ApiError(401, "Unauthorized", "Unauthorized").status
        try:
            with self.store.lock:
                return self._route(method, path.strip("/").split("/"), query, headers, body, account)
        except ApiError as exc:
            return exc.code, exc.status

    def _route(
        self, method: str, parts: list[str], query: dict[str, str], headers: Any, body: bytes, account: Account | None
    ) -> tuple[int, Any]:
        if parts == ["version"]:
            return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "platform": "linux/amd64"}
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            return 200, group_list(self.store.types.values())
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            try:
                return 200, resource_list(self.store.types.values(), group, version)
            except LookupError:
                raise ApiError(404, "NotFound", "the server could not find the requested resource") from None
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 2:
            raise ApiError(404, "NotFound", "the fake serves no subresources")
        rt = self.store.type_of(group, version, rest[0])
        name = rest[1] if len(rest) == 2 else ""
        if bool(namespace) != rt.namespaced and (name or method == "POST"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self._authorize(account, verb_of(method, name), rt, namespace, name)
        return self._serve(method, rt, namespace, name, query, headers, body, account)

    def _serve(
        self,
        method: str,
        rt: ResourceType,
        ns: str,
        name: str,
        query: dict[str, str],
        headers: Any,
        body: bytes,
        account: Account | None,
    ) -> tuple[int, Any]:
        manager = query.get("fieldManager") or str(headers.get("User-Agent", "unknown")).split("/")[0]
        store = self.store
        if method == "GET":
            if name:
                return 200, store.read(rt, ns, name)
            items = [
                store.rendered(k)
                for k in sorted(store.objects)
                if k[:2] == (rt.group, rt.plural) and (not ns or k[2] == ns)
            ]
            return 200, {
                "apiVersion": rt.group_version,
                "kind": f"{rt.kind}List",
                "metadata": {"resourceVersion": str(store._rv)},
                "items": items,
            }
        if method == "DELETE":
            return 200, store.delete(rt, ns, name)
        content_type = str(headers.get("Content-Type", "")).split(";")[0].strip()
        if method != "PATCH" or content_type != "application/apply-patch+yaml":
            self._namespace_exists(rt, ns)
        if method == "POST":
            payload = self._object(rt, ns, json.loads(body))
            return 201, store.create(rt, ns, payload, manager)
        if method == "PUT":
            if self.stale_puts > 0 and store.key(rt, ns, name) in store.objects:
                self.stale_puts -= 1
                store.bump(store.key(rt, ns, name))  # someone else wrote it just before this PUT
            return 200, store.replace(rt, ns, name, self._object(rt, ns, json.loads(body)), manager)
        if content_type == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "PATCH requests with apply content type must specify fieldManager")
            applied = self._object(rt, ns, yaml.safe_load(body))
            if store.key(rt, ns, name) not in store.objects:
                self._namespace_exists(rt, ns)
                self._authorize(account, "create", rt, ns, name)  # apply creating an object also needs create
            return store.apply(rt, ns, name, applied, manager, query.get("force") == "true")
        kind = _PATCH_TYPES.get(content_type)
        if kind is None or (kind == "strategic" and rt.custom):
            accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {accepted}",
            )
        return 200, store.patch(rt, ns, name, kind, json.loads(body), manager)

    def _object(self, rt: ResourceType, ns: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("kind") != rt.kind:
            raise ApiError(400, "BadRequest", f"the body must be a {rt.kind}")
        sent = (body.get("metadata") or {}).get("namespace")
        if rt.namespaced and sent and sent != ns:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        return body

    def _namespace_exists(self, rt: ResourceType, ns: str) -> None:
        if rt.namespaced and ("", "namespaces", "", ns) not in self.store.objects:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})

    def _authorize(self, account: Account | None, verb: str, rt: ResourceType, ns: str, name: str) -> None:
        allowed = (verb, rt.plural) not in self.denied
        if account is not None:
            allowed = allowed and account.allows(verb, rt, ns)
            self.decisions.append(Decision(account.user, verb, rt.resource, ns, allowed))
        if not allowed:
            raise forbidden(account.user if account else SERVICE_ACCOUNT, verb, rt, ns, name)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as the client's connection pool expects."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    fake: FakeKubeApi

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        code, payload = self.fake.answer(self.command, url.path, query, self.headers, body)
        content_type = str(self.headers.get("Content-Type", "")).split(";")[0]
        authorization = str(self.headers.get("Authorization", ""))
        self.fake.seen.append(Seen(self.command, url.path, query, content_type, code, authorization))
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # the test output stays readable
        pass
