"""The OpenAPI document as the API really answers (tested against the running API with schemathesis).

FastAPI documents a 422 `HTTPValidationError` on every route that takes input, while ours answer 400
`{"error": "..."}` (cloud.api.errors). Here that becomes 400 `Error`, and each operation also lists the
other errors it can answer: 401 and 403 where a token is checked (and which token, as a security scheme), 404
where a path names something, 409 where a state or a conflict can refuse the call, 408 and 413 where a
body is read (cloud.api.guard), 503 where the database is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from cloud.api.deps import require_admin, require_agent, require_caller, require_caller_or_agent, require_registrant

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "Every error: one line naming the field or the reason. Some carry more keys (e.g. `next_seq`).",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
SECURITY_SCHEMES: dict[str, Any] = {
    "callerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin token (TIANGONG_ADMIN_TOKEN) or an API token (tgp_...) within its scope.",
    },
    "agentToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An agent token (tga_...), received at registration; acts for its own agent only.",
    },
    "registrationToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A registration token (tgr_..., or TIANGONG_AGENT_TOKEN): registers an agent.",
    },
}
_SECURITY: dict[Callable[..., Any], list[dict[str, list[str]]]] = {
    require_caller: [{"callerToken": []}],
    require_admin: [{"callerToken": []}],
    require_caller_or_agent: [{"callerToken": []}, {"agentToken": []}],
    require_agent: [{"agentToken": []}],
    require_registrant: [{"registrationToken": []}, {"agentToken": []}],
}
_DESCRIPTIONS = {
    400: "The request is invalid; `error` names the field",
    401: "Missing, unknown or expired bearer token",
    403: "The token may not do this (its kind, scope, agent, or the command policy); `error` says why",
    404: "What the path names does not exist",
    408: "The body stopped arriving before it was complete",
    409: "Refused in the current state (`error` says why)",
    413: "The body is larger than this route accepts",
    503: "The database is unavailable; retry (see Retry-After)",
}
# Where a state or a conflict can refuse the call (services raise Conflict); the rest cannot answer 409.
_CONFLICTS = {
    ("post", "/api/v1/tasks"),  # agent offline, type not offered, idempotency key reused with another body
    ("post", "/api/v1/tasks/{task_id}/cancel"),
    ("post", "/api/v1/tasks/{task_id}/retry"),
    ("delete", "/api/v1/tasks/{task_id}"),
    ("delete", "/api/v1/files/{file_id}"),
    ("post", "/api/v1/agent/tasks/{task_id}/logs"),
    ("post", "/api/v1/agent/tasks/{task_id}/result"),
    ("post", "/api/v1/agents/register"),  # the id is registered already (its token exists)
}
# Media types a route answers besides the JSON FastAPI infers from its response model.
_EXTRA_MEDIA = {
    ("get", "/api/v1/tasks/{task_id}/logs"): ("text/event-stream", "text/plain"),  # follow=true, Accept: text/plain
}

# JSON-RPC 2.0 (cloud.api.routes.rpc reads its body by hand): one call or a batch of them. Errors are
# answered with 200 and a JSON-RPC `error`, as the protocol wants.
_RPC_CALL: dict[str, Any] = {
    "type": "object",
    "required": ["jsonrpc", "method"],
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "method": {
            "type": "string",
            "description": "task_create_task, task_create_task_blocking, task_query or task_delete",
        },
        "params": {"type": "object", "description": "The method's parameters, with the admin token as `token`."},
        "id": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
    },
}
_RPC_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"anyOf": [_RPC_CALL, {"type": "array", "items": _RPC_CALL, "minItems": 1}]},
        },
    },
}


def install_openapi(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the error responses and security each operation really has."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    # Included routers' routes come as contexts carrying the full path (prefix included).
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            op = doc["paths"].get(route.path_format, {}).get(method.lower())
            if op is not None:
                _document(op, route, method.lower())
    return doc


def _document(op: dict[str, Any], route: RouteContext, method: str) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    path = str(route.path_format)
    key = (method, path)
    security = _security(route)
    rpc = path == "/api/rpc"  # its body is read by hand, so FastAPI does not document it
    guarded = route.body_field is not None or rpc  # the bodies cloud.api.guard reads, with an idle timeout
    reads_body = guarded or "requestBody" in op
    codes = {
        400: bool(op.get("parameters")) or reads_body,
        401: security is not None,
        403: security is not None,
        404: "{" in path,
        408: guarded,
        409: key in _CONFLICTS,
        413: reads_body,
        503: path.startswith("/api/") or path == "/readyz",
    }
    for code, applies in codes.items():
        if applies:
            responses.setdefault(str(code), {"description": _DESCRIPTIONS[code]})
    for status, response in responses.items():
        if status[0] in "45" and "content" not in response:
            response["content"] = {"application/json": {"schema": ERROR_REF}}
    if security is not None:
        op["security"] = security
    for media in _EXTRA_MEDIA.get(key, ()):
        responses["200"].setdefault("content", {})[media] = {"schema": {"type": "string"}}
    if rpc:
        op.setdefault("requestBody", _RPC_BODY)
        responses.setdefault("204", {"description": "Only notifications (calls without an `id`): no answer"})


def _security(route: RouteContext) -> list[dict[str, list[str]]] | None:
    for dep in route.dependant.dependencies:
        if dep.call in _SECURITY:
            return _SECURITY[dep.call]
    return None
