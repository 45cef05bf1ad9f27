"""The object store and write semantics of the FAKE Kubernetes API server (tests/fakes/kube_api.py).

Modelled on the real API server: resourceVersion bumps only when an object really changes (so a no-op
apply leaves it alone), generation bumps when anything outside metadata and status changes, status is
kept across writes, PUT needs the current resourceVersion (409 Conflict otherwise), names and container
images are checked (422 Invalid with causes), and server-side apply tracks which manager owns which
field (409 on a conflict unless forced). Not modelled: admission, defaulting, finalizers, graceful
deletion, watches, subresources, field selectors; apply treats every list as atomic (a real server
merges lists such as containers by key).
"""

from __future__ import annotations

import copy
import secrets
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.fakes.kube_catalog import BUILTIN, ResourceType, crd_types, invalid_causes, simulated_status
from tests.fakes.kube_patches import PatchError, json_patch, leaf_paths, merge_patch, remove_path, strategic_merge

Key = tuple[str, str, str, str]
"""(group, plural, namespace, name); namespace is '' for cluster-scoped objects."""
_IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


class ApiError(Exception):
    """An error answer: the HTTP code and a Status object as the real server sends it."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details or {},
            "code": code,
        }


def _owned_paths(obj: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    return {p: v for p, v in leaf_paths(obj).items() if p not in _IDENTITY and p[:1] != ("status",)}


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    for field in ("resourceVersion", "generation", "managedFields"):
        out.get("metadata", {}).pop(field, None)
    out.pop("status", None)
    return out


class Store:
    """Objects by key, their field owners, and the served resource types."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[Key, dict[str, Any]] = {}
        self.owners: dict[Key, dict[tuple[str, ...], str]] = {}
        self.operations: dict[Key, dict[str, str]] = {}
        self.reads: dict[tuple[str, int], int] = {}
        self._rv = 1000
        for rt in BUILTIN:
            self.types[(rt.group, rt.version, rt.plural)] = rt
        for name in ("default", "kube-system"):
            self.create(self.type_of("", "v1", "namespaces"), "", {"metadata": {"name": name}}, "fake-bootstrap")

    def type_of(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    def key(self, rt: ResourceType, namespace: str, name: str) -> Key:
        return (rt.group, rt.plural, namespace if rt.namespaced else "", name)

    def rendered(self, key: Key) -> dict[str, Any]:
        """The stored object with its managedFields, as GET shows it."""
        obj = copy.deepcopy(self.objects[key])
        obj["metadata"]["managedFields"] = [
            {"manager": m, "operation": op, "apiVersion": obj["apiVersion"], "fieldsType": "FieldsV1", "fieldsV1": {}}
            for m, op in sorted(self.operations.get(key, {}).items())
        ]
        return obj

    def not_found(self, rt: ResourceType, name: str) -> ApiError:
        details = {"name": name, "group": rt.group, "kind": rt.plural}
        return ApiError(404, "NotFound", f'{rt.resource} "{name}" not found', details)

    def existing(self, rt: ResourceType, namespace: str, name: str) -> Key:
        key = self.key(rt, namespace, name)
        if key not in self.objects:
            raise self.not_found(rt, name)
        return key

    def read(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        """GET one object; a workload's status moves on with every read (see kube_catalog)."""
        key = self.existing(rt, namespace, name)
        obj = self.objects[key]
        counter = (obj["metadata"]["uid"], int(obj["metadata"].get("generation", 1)))
        self.reads[counter] = self.reads.get(counter, 0) + 1
        status = simulated_status(obj, self.reads[counter])
        if status is not None:
            obj["status"] = status
        return self.rendered(key)

    def create(
        self, rt: ResourceType, namespace: str, body: dict[str, Any], manager: str, operation: str = "Update"
    ) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        key = self.key(rt, namespace, meta.get("name", ""))
        if key in self.objects:
            details = {"name": key[3], "group": rt.group, "kind": rt.plural}
            raise ApiError(409, "AlreadyExists", f'{rt.resource} "{key[3]}" already exists', details)
        self._commit(rt, key, body, None, manager, operation, _owned_paths(body))
        return self.rendered(key)

    def replace(
        self, rt: ResourceType, namespace: str, name: str, body: dict[str, Any], manager: str
    ) -> dict[str, Any]:
        key = self.existing(rt, namespace, name)
        old = self.objects[key]
        sent = (body.get("metadata") or {}).get("resourceVersion")
        if not sent:
            cause = {
                "reason": "FieldValueInvalid",
                "message": "must be specified for an update",
                "field": "metadata.resourceVersion",
            }
            raise ApiError(
                422,
                "Invalid",
                f'{rt.kind} "{name}" is invalid: metadata.resourceVersion: must be specified for an update',
                {"causes": [cause]},
            )
        if sent != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.resource} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        changed = {p: v for p, v in _owned_paths(body).items() if _owned_paths(old).get(p) != v}
        self._commit(rt, key, body, old, manager, "Update", changed)
        return self.rendered(key)

    def patch(self, rt: ResourceType, namespace: str, name: str, kind: str, patch: Any, manager: str) -> dict[str, Any]:
        """kind: strategic, merge or json."""
        key = self.existing(rt, namespace, name)
        old = self.objects[key]
        try:
            if kind == "json":
                new = json_patch(old, patch)
            elif kind == "strategic":
                new = strategic_merge(old, patch)
            else:
                new = merge_patch(old, patch)
        except (PatchError, KeyError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the patch cannot be applied: {exc}") from None
        changed = {p: v for p, v in _owned_paths(new).items() if _owned_paths(old).get(p) != v}
        self._commit(rt, key, new, old, manager, "Update", changed)
        return self.rendered(key)

    def apply(
        self, rt: ResourceType, namespace: str, name: str, body: dict[str, Any], manager: str, force: bool
    ) -> tuple[int, dict[str, Any]]:
        """Server-side apply: create, or merge the fields `manager` sets and drop those it stopped setting."""
        key = self.key(rt, namespace, name)
        applied = _owned_paths(body)
        if key not in self.objects:
            return 201, self.create(rt, namespace, body, manager, "Apply")
        old = self.objects[key]
        owners = self.owners.setdefault(key, {})
        live = _owned_paths(old)
        conflicts = sorted(p for p, v in applied.items() if owners.get(p, manager) != manager and live.get(p) != v)
        if conflicts and not force:
            who = sorted({owners[p] for p in conflicts})
            fields = ", ".join("." + ".".join(p) for p in conflicts)
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{owners[p]}"',
                    "field": "." + ".".join(p),
                }
                for p in conflicts
            ]
            raise ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflict(s): conflict with {', '.join(map(repr, who))}: {fields}",
                {"causes": causes},
            )
        new = merge_patch(old, body)
        for path, owner in list(owners.items()):
            if owner == manager and path not in applied:
                remove_path(new, path)  # a field this manager stopped applying goes away
                del owners[path]
        self._commit(rt, key, new, old, manager, "Apply", applied)
        return 200, self.rendered(key)

    def delete(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        key = self.existing(rt, namespace, name)
        gone = self.rendered(key)
        for k in [k for k in self.objects if k == key or (rt.plural == "namespaces" and k[2] == name)]:
            self._drop(k)
        if rt.plural == "customresourcedefinitions":
            for served in crd_types(gone):
                self.types.pop((served.group, served.version, served.plural), None)
                for k in [k for k in self.objects if k[:2] == (served.group, served.plural)]:
                    self._drop(k)
        if rt.plural in ("pods", "namespaces"):
            return gone  # these kinds answer with the object itself
        details = {"name": name, "group": rt.group, "kind": rt.plural, "uid": gone["metadata"]["uid"]}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _drop(self, key: Key) -> None:
        self.objects.pop(key, None)
        self.owners.pop(key, None)
        self.operations.pop(key, None)

    def _commit(
        self,
        rt: ResourceType,
        key: Key,
        new: dict[str, Any],
        old: dict[str, Any] | None,
        manager: str,
        operation: str,
        fields: dict[tuple[str, ...], Any],
    ) -> None:
        new = copy.deepcopy(new)
        new["apiVersion"], new["kind"] = rt.group_version, rt.kind
        meta = new.setdefault("metadata", {})
        meta.pop("managedFields", None)
        meta["name"] = key[3]
        if rt.namespaced:
            meta["namespace"] = key[2]
        causes = invalid_causes(rt, new)
        if causes:
            fields_text = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
            shown = fields_text if len(causes) == 1 else f"[{fields_text}]"
            details = {"name": key[3], "group": rt.group, "kind": rt.kind, "causes": causes}
            raise ApiError(
                422, "Invalid", f'{rt.kind}{"." + rt.group if rt.group else ""} "{key[3]}" is invalid: {shown}', details
            )
        if old is None:
            meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            meta["generation"] = 1
        else:
            for field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                meta[field] = old["metadata"][field]
            new.pop("status", None)
            if "status" in old:
                new["status"] = old["status"]
            if _content(new) == _content(old) and not self._takes_over(key, fields, manager):
                return  # nothing changed: no write, the same resourceVersion (what makes "unchanged")
            spec_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
            if spec_of(new) != spec_of(old):
                meta["generation"] = int(old["metadata"]["generation"]) + 1
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self.objects[key] = new
        owners = self.owners.setdefault(key, {})
        owners.update(dict.fromkeys(fields, manager))
        self.operations.setdefault(key, {})[manager] = operation
        if rt.plural == "customresourcedefinitions":
            new["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
            for served in crd_types(new):
                self.types[(served.group, served.version, served.plural)] = served

    def _takes_over(self, key: Key, fields: dict[tuple[str, ...], Any], manager: str) -> bool:
        owners = self.owners.get(key, {})
        return any(owners.get(p) != manager for p in fields)

    def bump(self, key: Key, writer: str = "someone-else") -> None:
        """A write by another client: the object's resourceVersion moves on (tests use it for 409s)."""
        obj = self.objects[key]
        obj["metadata"].setdefault("annotations", {})["fake.tiangong.io/touched-by"] = writer
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
