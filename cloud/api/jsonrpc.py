"""JSON-RPC 2.0 framing (single and batch requests, the spec's error codes); the methods are elsewhere."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from cloud.api.errors import describe_validation
from cloud.api.strict_json import OFFLOAD_BYTES, JsonRefused, loads_checked

log = logging.getLogger("tiangong.cloud")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAUTHORIZED = -32001
FORBIDDEN = -32003

Method = Callable[[dict[str, Any]], Awaitable[Any]]


class RpcError(Exception):
    """An error answer: a JSON-RPC code and a message for the caller."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}


ANSWER_TOO_LARGE = -32000


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_batch: int = 50
    max_depth: int = 64
    max_answer_bytes: int = 16 * 1024 * 1024


async def dispatch(body: bytes, methods: dict[str, Method], limits: Limits | None = None) -> bytes | None:
    """The encoded response document for a request body: an object, a list (batch), or None
    (notifications only). An answer past `max_answer_bytes` is replaced by an error saying so."""
    limits = limits or Limits()
    try:
        if len(body) > OFFLOAD_BYTES:  # the token is inside: this runs for anyone, so never on the loop
            payload = await run_in_threadpool(loads_checked, body, limits.max_depth)
        else:
            payload = loads_checked(body, limits.max_depth)
    except JsonRefused as exc:
        return _encode(_error(None, PARSE_ERROR, f"Parse error: {exc}"))
    if isinstance(payload, list):
        if not payload:
            return _encode(_error(None, INVALID_REQUEST, "Invalid Request: empty batch"))
        if len(payload) > limits.max_batch:
            return _encode(
                _error(
                    None,
                    INVALID_REQUEST,
                    f"Invalid Request: a batch holds at most {limits.max_batch} calls, this one {len(payload)}",
                )
            )
        answers = await asyncio.gather(*(_one(item, methods) for item in payload))
        return _encode_batch([a for a in answers if a is not None], limits.max_answer_bytes)
    answer = await _one(payload, methods)
    return None if answer is None else _encode_batch([answer], limits.max_answer_bytes, single=True)


def _encode(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _encode_batch(answers: list[dict[str, Any]], budget: int, single: bool = False) -> bytes | None:
    """Encode answers within `budget` bytes in all; those that do not fit become a short error each."""
    if not answers:
        return None
    parts: list[bytes] = []
    used = 0
    for answer in answers:
        part = _encode(answer)
        if used + len(part) > budget:
            part = _encode(
                _error(
                    answer.get("id"),
                    ANSWER_TOO_LARGE,
                    f"Answer too large: {len(part)} bytes would pass the {budget}-byte limit of one response; "
                    "narrow the call (more conditions, fewer calls per batch)",
                )
            )
        used += len(part)
        parts.append(part)
    return parts[0] if single else b"[" + b",".join(parts) + b"]"


async def _one(req: Any, methods: dict[str, Method]) -> dict[str, Any] | None:
    if not isinstance(req, dict):
        return _error(None, INVALID_REQUEST, "Invalid Request: expected an object")
    req_id = req.get("id")
    if (
        req.get("jsonrpc") != "2.0"
        or not isinstance(req.get("method"), str)
        or not isinstance(req_id, str | int | float | type(None))
        or isinstance(req_id, bool)
    ):
        return _error(
            req_id if isinstance(req_id, str | int) else None,
            INVALID_REQUEST,
            'Invalid Request: needs "jsonrpc": "2.0", a string "method" and an optional id',
        )
    notification = "id" not in req
    method = methods.get(req["method"])
    if method is None:
        name = req["method"][:100]  # echoed, so bounded: a method name may be a megabyte long
        answer = _error(req_id, METHOD_NOT_FOUND, f"Method not found: {name}; known: {', '.join(methods)}")
        return None if notification else answer
    params = req.get("params", {})
    try:
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "Invalid params: params must be an object (by name)")
        result = await method(params)
    except RpcError as exc:
        return None if notification else _error(req_id, exc.code, exc.message)
    except ValidationError as exc:
        return None if notification else _error(req_id, INVALID_PARAMS, f"Invalid params: {describe_validation(exc)}")
    except Exception:
        log.exception("JSON-RPC method %s failed", req["method"])
        return None if notification else _error(req_id, INTERNAL_ERROR, "Internal error; see the cloud's log")
    return None if notification else {"jsonrpc": "2.0", "id": req_id, "result": result}
