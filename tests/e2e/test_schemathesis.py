"""The cloud keeps the promises of its own OpenAPI document: schemathesis generates requests from
/openapi.json (valid and invalid ones) for every operation and sends them to a real cloud + agent, on
SQLite and PostgreSQL. No answer may be a 5xx, and every answer must be documented: its status code,
its content type, its headers and its body's schema."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from schemathesis.engine.recorder import CheckFailureInfo
from schemathesis.hooks import HookContext

from tests.e2e.harness import ADMIN, AGENT, Cloud

CLOUD_PROCESS = True  # the fuzzer is CPU-bound: the cloud gets a core of its own, not a thread under its GIL

MAX_EXAMPLES = 40
"""Per operation, in the fuzzing phase; the examples and coverage phases add their own (every documented
example, and each field's boundaries and wrong types), and one generated string in four is one that broke
the cloud once (ODD_STRINGS). Over a thousand requests per backend. A deeper run, before a release:
`FUZZ_EXAMPLES=500 .venv/bin/pytest tests/e2e/test_schemathesis.py`."""

WAIT_S = 0.2
"""The longest wait a generated claim, heartbeat or sync task may ask for (the API allows 60-300 s):
waits are the API working as documented, and a fuzz run of them would only measure time."""

ODD_STRINGS = [
    "\x00",  # PostgreSQL refuses NUL in text
    "a\x00b",
    "部署.sql",  # above U+00FF: Latin-1 header encodings choke on it
    "é",
    "\u202etxt.exe",  # a bidi override
    "../../etc/passwd",
    "..",
    "%00",
    "\x7f\x1b[31m",
    "\ufffd",
    "🚀" * 3,
    " ",
]


def _config(agent_token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": 14,  # with `deterministic`, the same requests on every run: a failure reproduces
            "generation": {
                "max-examples": int(os.environ.get("FUZZ_EXAMPLES", MAX_EXAMPLES)),
                "deterministic": True,
                "database": "none",
                "with-security-parameters": False,  # the token is configured below; do not fuzz it
                # Now and then, a string that broke the cloud once, anywhere a string goes.
                "dictionaries": {"string": {"dictionary": "odd", "probability": 0.25}},
            },
            # Stateful runs chain calls into scenarios: minutes more, for promises this test does not check.
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_headers_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
            # The document names which token each operation takes; schemathesis sends that one.
            "auth": {
                "openapi": {
                    "callerToken": {"bearer": ADMIN},
                    "agentToken": {"bearer": agent_token},
                    "registrationToken": {"bearer": AGENT},
                }
            },
            "dictionaries": {"odd": {"values": ODD_STRINGS}},
            "request-timeout": 15,  # a request hanging longer fails the test instead of stalling it
        }
    )


def _short_waits(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    """Keep waits short in every phase: claims long-poll (25 s by default), heartbeats and sync tasks wait,
    and `follow=true` streams a task's log until the task ends, which a pending task may never do."""
    path = case.operation.path
    if isinstance(case.body, dict):
        if path.endswith(("/claim", "/heartbeat")):
            _cap(case.body, "wait_s", WAIT_S)
        if path == "/api/v1/tasks" and case.body.get("sync") is True:
            _cap(case.body, "timeout", 1)
    if path.endswith("/logs") and isinstance(case.query, dict):
        case.query.pop("follow", None)


def _cap(body: dict[str, Any], key: str, limit: float) -> None:
    """A missing or longer value becomes `limit`; an invalid one stays, for the API to refuse."""
    value = body.get(key)
    if key not in body or (isinstance(value, int | float) and not isinstance(value, bool) and value > limit):
        body[key] = limit


def _failures(cloud: Cloud) -> tuple[list[str], int]:
    """Run every phase over every operation, as `schemathesis run` would; (failures, requests sent).

    Schemathesis's pytest integration (`from_fixture`) does not run under this pytest, so the test
    drives its engine, the one behind its CLI, and reports each failure with a curl command to replay it.
    """
    schema = schemathesis.openapi.from_url(f"{cloud.url}/openapi.json", config=_config(cloud.agent_token("local")))
    found: list[str] = []
    sent = 0
    # `before_call` runs in every phase (the `map_*` hooks only where hypothesis generates); schemathesis
    # takes it from its global registry only, so it is registered for this run and removed after.
    schemathesis.hook("before_call")(_short_waits)
    try:
        run = list(schemathesis.engine.from_schema(schema).execute())
    finally:
        schemathesis.hooks.unregister(_short_waits)
    for event in run:
        if isinstance(event, events.ScenarioFinished):
            sent += len(event.recorder.interactions)
            for nodes in event.recorder.checks.values():
                found += [_describe(n.failure_info) for n in nodes if n.failure_info is not None]
        elif isinstance(event, events.NonFatalError):  # a request that did not complete, e.g. timed out
            found.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return sorted(set(found)), sent


def _describe(info: CheckFailureInfo) -> str:
    failure = info.failure
    return f"{failure.operation}: {failure.title}: {failure.message}\n    {info.code_sample}"


def test_every_answer_is_documented_and_none_is_a_server_error(cloud: Cloud) -> None:
    found, sent = _failures(cloud)
    assert sent > 500, f"only {sent} requests were sent"
    assert not found, f"{len(found)} failures:\n" + "\n".join(found)


def test_the_document_names_our_errors_and_tokens(cloud: Cloud) -> None:
    """FastAPI's own document promised 422 `HTTPValidationError` where every route answers 400 `{"error"}`."""
    doc = cloud.http.get("/openapi.json").json()
    codes = {code for ops in doc["paths"].values() for op in ops.values() for code in op["responses"]}
    assert "422" not in codes and "HTTPValidationError" not in doc["components"]["schemas"]
    create = doc["paths"]["/api/v1/tasks"]["post"]
    assert {"201", "400", "401", "409", "413"} <= set(create["responses"])
    assert create["responses"]["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert create["security"] == [{"callerToken": []}] and "403" in create["responses"]
    register = doc["paths"]["/api/v1/agents/register"]["post"]
    assert register["security"] == [{"registrationToken": []}, {"agentToken": []}]
    assert doc["paths"]["/api/v1/agents/{agent_id}/claim"]["post"]["security"] == [{"agentToken": []}]
    assert doc["paths"]["/api/v1/tokens"]["post"]["security"] == [{"callerToken": []}]
    assert set(doc["components"]["securitySchemes"]) == {"callerToken", "agentToken", "registrationToken"}
    upload = doc["paths"]["/api/v1/files"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"] and "413" in upload["responses"]
    assert "404" in doc["paths"]["/api/v1/files/{file_id}"]["get"]["responses"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
