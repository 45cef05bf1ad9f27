"""The five operations on one object, through the dynamic client: apply, create, update, delete, patch.

Each API call is one `Calls` step (a worker thread, cancel and deadline checked around it). What the API
raises is put in plain words by `explain`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from executors.base import Stopped
from executors.k8s.calls import Calls
from executors.k8s.client import Cluster
from executors.k8s.errors import K8sError, Target, describe, describe_discovery, describe_transport, reason_of
from executors.k8s.params import K8sParams

FIELD_MANAGER = "tiangong"
UPDATE_ATTEMPTS = 5
"""An update that keeps meeting 409 Conflict (someone else writing the object) gives up after this."""
CRD_SERVED_WAIT_SECONDS = 15.0
"""How long a kind is looked for again after this task created a CRD, which the API serves a moment later."""
CONTENT_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


@dataclass
class Done:
    """One object handled: the action (created, configured, unchanged, updated, patched, deleted, absent),
    where it is, and what the API returned (None when there was nothing to return)."""

    action: str
    target: Target
    resource: Any
    obj: dict[str, Any] | None


def resource_version(obj: dict[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")


class Operator:
    """Handles the objects of one task in order."""

    def __init__(
        self, cluster: Cluster, calls: Calls, params: K8sParams, default_namespace: str, log: Callable[[str], None]
    ) -> None:
        self.cluster = cluster
        self.calls = calls
        self.params = params
        self.default_namespace = default_namespace
        self.log = log
        self.crd_created = False

    async def locate(self, obj: dict[str, Any]) -> tuple[Any, Target]:
        """The API resource of `obj` and the Target it names: its own namespace, else the task's default;
        none for a cluster-scoped kind."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        waited = 0.0
        while True:
            try:
                resource = await self.calls(lambda: self.cluster.resource(api_version, kind))
                break
            except K8sError as exc:
                if exc.reason != "NoKind" or not self.crd_created or waited >= CRD_SERVED_WAIT_SECONDS:
                    raise
                if waited == 0:
                    self.log(f"waiting for the API to serve {kind} ({api_version}) from the new CRD")
                await self.calls.sleep(0.5)
                waited += 0.5
            except Stopped:
                raise
            except Exception as exc:
                raise explain(exc, None, self.cluster.host) from None
        meta = obj["metadata"]
        namespace = (meta.get("namespace") or self.default_namespace) if resource.namespaced else ""
        name = meta.get("name") or meta.get("generateName", "")
        verb = {"apply": "patch"}.get(self.params.operation, self.params.operation)
        return resource, Target(verb, kind, resource.name, resource.group or "", namespace, name, api_version)

    async def handle(self, obj: dict[str, Any], resource: Any, target: Target) -> Done:
        """Run the task's operation on `obj`."""
        body = copy.deepcopy(obj)
        if target.namespace:
            body["metadata"]["namespace"] = target.namespace
        else:
            body["metadata"].pop("namespace", None)  # cluster-scoped: a namespace there means nothing
        step = getattr(self, f"_{self.params.operation}")
        try:
            done: Done = await step(body, resource, target)
        except (K8sError, Stopped):
            raise
        except Exception as exc:
            raise explain(exc, target, self.cluster.host) from None
        if obj.get("kind") == "CustomResourceDefinition" and done.action == "created":
            self.crd_created = True
        return done

    def _send(self, method: str, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """One request (blocking): the HTTP status and the decoded body."""
        response = getattr(self.cluster.dynamic, method)(
            *args, serialize=False, _request_timeout=self.calls.request_timeout(), **kwargs
        )
        data = response.data
        return int(response.status), json.loads(data) if data else {}

    async def _get(self, resource: Any, target: Target) -> dict[str, Any] | None:
        get = dataclasses.replace(target, verb="get")
        try:
            _, obj = await self.calls(
                lambda: self._send("get", resource, name=target.name, namespace=target.namespace or None)
            )
            return obj
        except Stopped:
            raise
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise explain(exc, get, self.cluster.host) from None

    async def _apply(self, body: dict[str, Any], resource: Any, target: Target) -> Done:
        before = await self._get(resource, target)
        code, obj = await self.calls(
            lambda: self._send(
                "server_side_apply",
                resource,
                body=body,
                name=target.name,
                namespace=target.namespace or None,
                field_manager=FIELD_MANAGER,
                force_conflicts=True if self.params.force else None,
            )
        )
        if code == 201 or before is None:
            action = "created"
        else:
            action = "unchanged" if resource_version(obj) == resource_version(before) else "configured"
        return Done(action, target, resource, obj)

    async def _create(self, body: dict[str, Any], resource: Any, target: Target) -> Done:
        _, obj = await self.calls(
            lambda: self._send(
                "create", resource, body=body, namespace=target.namespace or None, field_manager=FIELD_MANAGER
            )
        )
        name = (obj.get("metadata") or {}).get("name", target.name)  # generateName: the server picked it
        created = dataclasses.replace(target, name=name)
        return Done("created", created, resource, obj)

    async def _update(self, body: dict[str, Any], resource: Any, target: Target) -> Done:
        pinned = resource_version(body)  # the caller's own resourceVersion: a conflict is then theirs to see
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            current = await self._get(resource, target)
            if current is None:
                raise K8sError(f"{target.kind} {target.ref} not found (update replaces an existing object)", "NotFound")
            if not pinned:
                body["metadata"]["resourceVersion"] = resource_version(current)
            try:
                _, obj = await self.calls(
                    lambda: self._send(
                        "replace",
                        resource,
                        body=body,
                        name=target.name,
                        namespace=target.namespace or None,
                        field_manager=FIELD_MANAGER,
                    )
                )
            except Exception as exc:
                if pinned or attempt == UPDATE_ATTEMPTS or getattr(exc, "status", None) != 409:
                    raise
                if reason_of(exc) != "Conflict":
                    raise
                retry = f"retry {attempt}/{UPDATE_ATTEMPTS - 1}"
                self.log(f"{target.kind} {target.ref} changed while we updated it (409 Conflict); {retry}")
                continue
            action = "unchanged" if resource_version(obj) == resource_version(current) else "updated"
            return Done(action, target, resource, obj)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _delete(self, body: dict[str, Any], resource: Any, target: Target) -> Done:
        try:
            _, obj = await self.calls(
                lambda: self._send(
                    "delete",
                    resource,
                    name=target.name,
                    namespace=target.namespace or None,
                    propagation_policy=self.params.propagation_policy,
                )
            )
        except Exception as exc:
            if getattr(exc, "status", None) == 404 and self.params.ignore_not_found:
                return Done("absent", target, resource, None)
            raise
        return Done("deleted", target, resource, obj)

    async def _patch(self, body: dict[str, Any], resource: Any, target: Target) -> Done:
        before = await self._get(resource, target)
        if before is None:
            raise K8sError(f"{target.kind} {target.ref} not found (patch changes an existing object)", "NotFound")
        patch_type = self.params.patch_type
        patch: Any = self.params.patch if patch_type == "json" else body
        try:
            obj = await self._send_patch(resource, target, patch, patch_type)
        except Exception as exc:
            # Custom resources take no strategic merge patch (415). When strategic is only the default,
            # do what the caller evidently meant: a merge patch. If they asked for strategic, say so.
            if getattr(exc, "status", None) != 415 or patch_type != "strategic" or self.params.patch_type_given:
                raise
            self.log(f"{target.kind} takes no strategic merge patch (a custom resource); sending a merge patch")
            obj = await self._send_patch(resource, target, patch, "merge")
        action = "unchanged" if resource_version(obj) == resource_version(before) else "patched"
        return Done(action, target, resource, obj)

    async def _send_patch(self, resource: Any, target: Target, patch: Any, patch_type: str) -> dict[str, Any]:
        _, obj = await self.calls(
            lambda: self._send(
                "patch",
                resource,
                body=patch,
                name=target.name,
                namespace=target.namespace or None,
                content_type=CONTENT_TYPES[patch_type],
                field_manager=FIELD_MANAGER,
            )
        )
        return obj

    async def fetch(self, resource: Any, target: Target) -> dict[str, Any] | None:
        """The object as it is now (None if gone); used while waiting for a rollout."""
        return await self._get(resource, target)


def explain(exc: BaseException, target: Target | None, host: str) -> K8sError:
    """Any failure of a client call as a K8sError in plain words."""
    import urllib3

    if isinstance(exc, K8sError):
        return exc
    if isinstance(getattr(exc, "status", None), int) and exc.status > 0:  # type: ignore[attr-defined]
        return describe(exc, target) if target is not None else describe_discovery(exc)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return describe_transport(exc, host)
    return K8sError(f"{type(exc).__name__}: {exc}")
