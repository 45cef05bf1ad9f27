"""Turning what the Kubernetes API and the client raise into plain words, keeping the API's reason.

Nothing here imports the kubernetes package: exceptions are recognised by their attributes (`status`,
`body`), so this module stays importable in the cloud.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_REFUSED = re.compile(r'cannot (?P<verb>[a-z]+) resource "(?P<resource>[^"]+)"(?: in API group "(?P<group>[^"]*)")?')


class K8sError(Exception):
    """A failure already put in plain words; `reason` is the API's (AlreadyExists, Forbidden...) if any."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """What a call was about, so a message can name it: the verb, the resource type and the object."""

    verb: str
    """The RBAC verb the call needs: get, create, update, patch, delete."""
    kind: str
    plural: str
    group: str
    namespace: str
    """Empty for cluster-scoped kinds."""
    name: str
    api_version: str = ""
    """The object's apiVersion (`apps/v1`), to name a kind the server does not serve."""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def resource(self) -> str:
        """`deployments.apps`, or `pods` for the core group: how RBAC rules and kubectl name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def status_of(exc: BaseException) -> dict[str, Any]:
    """The API's Status object carried by an ApiException, or {} when the body is not one."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body.strip():
        return {}
    try:
        status = json.loads(body)
    except ValueError:
        return {"message": body.strip()[:500]}
    return status if isinstance(status, dict) else {}


def reason_of(exc: BaseException) -> str:
    """The Status reason (`Conflict`, `AlreadyExists`...), or '' for other errors."""
    return str(status_of(exc).get("reason") or "")


def describe(exc: BaseException, target: Target) -> K8sError:
    """A K8sError for an API error about `target`, in words a user acts on."""
    code = int(getattr(exc, "status", 0) or 0)
    status = status_of(exc)
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or getattr(exc, "reason", "") or "").strip()
    details: dict[str, Any] = status["details"] if isinstance(status.get("details"), dict) else {}
    if reason == "AlreadyExists" or (code == 409 and target.verb == "create" and not reason):
        return K8sError(f"{target.kind} {target.ref} already exists", "AlreadyExists")
    if code == 404 and not details.get("kind") and not details.get("name"):
        # A Status naming no object is the API server's answer for a path it does not serve: the resource
        # type itself is gone (a CRD deleted after discovery was cached), not the object.
        kind = f"{target.api_version}/{target.kind}" if target.api_version else target.kind
        return K8sError(f"unknown kind {kind}: no such resource type on the server (is its CRD installed?)", "NoKind")
    if code == 404:
        about_target = details.get("kind") in (None, target.plural) and details.get("name") in (None, target.name)
        text = f"{target.kind} {target.ref} not found" if about_target else f"not found: {message}"
        return K8sError(text, "NotFound")
    if code == 403:
        # The API names what was refused (apply creating an object is refused as create, not patch).
        said = _REFUSED.search(message)
        verb, resource = target.verb, target.resource
        if said:
            verb, resource = said["verb"], said["resource"] + (f".{said['group']}" if said["group"] else "")
        where = f"in namespace {target.namespace}" if target.namespace else "cluster-wide"
        return K8sError(
            f"forbidden: the agent's Kubernetes account may not {verb} {resource} {where} "
            f"(grant it in the agent's Role): {message}",
            "Forbidden",
        )
    if code == 401:
        return K8sError("unauthorized: the API server refused the agent's credentials", "Unauthorized")
    if code == 422 or reason == "Invalid":
        causes = [c for c in details.get("causes") or [] if isinstance(c, dict)]
        fields = "; ".join(
            f"{c['field']}: {c.get('message', '')}" if c.get("field") else str(c.get("message", "")) for c in causes
        )
        return K8sError(f"invalid {target.kind} {target.ref}: {fields or message}", "Invalid")
    if code == 409:
        hint = " (set params.force to take these fields over)" if target.verb == "patch" and "Apply" in message else ""
        return K8sError(f"conflict: {message}{hint}", reason or "Conflict")
    if code == 415:
        text = f"the API server does not accept this patch for {target.kind}: {message}"
        return K8sError(text, "UnsupportedMediaType")
    return K8sError(f"the API server answered {code} {reason or ''}: {message}".replace("  ", " "), reason)


def describe_discovery(exc: BaseException) -> K8sError:
    """A K8sError for a failure while discovering the API's resource types."""
    code = int(getattr(exc, "status", 0) or 0)
    status = status_of(exc)
    message = str(status.get("message") or getattr(exc, "reason", "") or "").strip()
    if code == 401:
        return K8sError("unauthorized: the API server refused the agent's credentials", "Unauthorized")
    if code == 403:
        return K8sError(f"forbidden: the agent's Kubernetes account may not read API discovery: {message}", "Forbidden")
    reason = str(status.get("reason") or "")
    return K8sError(f"API discovery failed: {code} {reason}: {message}", reason)


def describe_transport(exc: BaseException, host: str) -> K8sError:
    """A K8sError for a connection-level failure (refused, DNS, TLS, timeout)."""
    cause = getattr(exc, "reason", None) or exc
    return K8sError(f"cannot reach the Kubernetes API at {host}: {cause}", "Unreachable")
