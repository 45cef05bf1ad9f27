"""`params` of a `k8s` task: seed 004's operation, namespace and patch_type, plus the issue's options.

Checked by hand (not pydantic) so each message is the one a caller needs, naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

OPERATIONS = ("apply", "create", "update", "delete", "patch")
PATCH_TYPES = ("strategic", "merge", "json")
PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")
JSON_PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # an RFC 1123 label, as the API demands
_KNOWN = {
    "operation",
    "namespace",
    "patch_type",
    "patch",
    "force",
    "propagation_policy",
    "ignore_not_found",
    "wait",
    "file_path",  # where file_id already lies on the agent (the agent's file lookup reads it)
}


@dataclass(frozen=True)
class K8sParams:
    """The checked params with their defaults."""

    operation: str = "apply"
    namespace: str | None = None
    patch_type: str = "strategic"
    patch_type_given: bool = False
    """False when strategic is only the default: then a custom resource falls back to a merge patch."""
    patch: list[dict[str, Any]] | None = None
    force: bool = False
    propagation_policy: str | None = None
    ignore_not_found: bool = False
    wait: bool = False


def parse_params(params: dict[str, Any]) -> K8sParams:
    """The params of a k8s task; raises ValueError naming the first bad field."""
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise ValueError(f"params.{unknown[0]}: unknown field; known: {', '.join(sorted(_KNOWN))}")
    operation = _choice(params, "operation", OPERATIONS, "apply")
    namespace = params.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not _NAMESPACE.match(namespace)):
        raise ValueError("params.namespace: must be a namespace name (lower case letters, digits and '-')")
    patch_type = _choice(params, "patch_type", PATCH_TYPES, "strategic")
    for flag in ("force", "ignore_not_found", "wait"):
        if not isinstance(params.get(flag, False), bool):
            raise ValueError(f"params.{flag}: must be true or false")
    policy = params.get("propagation_policy")
    if policy is not None and policy not in PROPAGATION_POLICIES:
        raise ValueError(f"params.propagation_policy: must be {_words(PROPAGATION_POLICIES)}")
    only = {
        "patch_type": "patch",
        "patch": "patch",
        "force": "apply",
        "propagation_policy": "delete",
        "ignore_not_found": "delete",
    }
    for field, op in only.items():
        if field in params and operation != op:
            raise ValueError(f"params.{field}: only used with operation {op}, not {operation}")
    if params.get("wait") and operation == "delete":
        raise ValueError("params.wait: waits for a rollout, so it cannot be used with operation delete")
    patch = params.get("patch")
    if patch_type == "json":
        if patch is None:
            raise ValueError("params.patch: the JSON Patch operations are required with patch_type json")
        _check_json_patch(patch)
    elif patch is not None:
        raise ValueError("params.patch: only used with patch_type json (other patches are the command itself)")
    return K8sParams(
        operation=operation,
        namespace=namespace,
        patch_type=patch_type,
        patch_type_given="patch_type" in params,
        patch=patch,
        force=bool(params.get("force", False)),
        propagation_policy=policy,
        ignore_not_found=bool(params.get("ignore_not_found", False)),
        wait=bool(params.get("wait", False)),
    )


def _choice(params: dict[str, Any], field: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(field, default)
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise ValueError(f"params.{field}: must be {_words(allowed)}")


def _words(allowed: tuple[str, ...]) -> str:
    return f"{', '.join(allowed[:-1])} or {allowed[-1]}"


def _check_json_patch(patch: Any) -> None:
    """RFC 6902's shape: a non-empty list of {op, path[, value | from]}."""
    if not isinstance(patch, list) or not patch:
        raise ValueError("params.patch: must be a non-empty list of JSON Patch operations")
    for i, op in enumerate(patch):
        where = f"params.patch[{i}]"
        if not isinstance(op, dict):
            raise ValueError(f"{where}: must be an object like {{op, path, value}}")
        if op.get("op") not in JSON_PATCH_OPS:
            raise ValueError(f"{where}.op: must be {_words(JSON_PATCH_OPS)}")
        for pointer in ("path", "from") if op["op"] in ("move", "copy") else ("path",):
            value = op.get(pointer)
            if not isinstance(value, str) or (value and not value.startswith("/")):
                raise ValueError(f"{where}.{pointer}: must be a JSON Pointer such as /spec/replicas")
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise ValueError(f"{where}.value: is required for op {op['op']}")


class K8sParamsModel(BaseModel):
    """The k8s type's `params_model`: the hand-written checks above, so their messages stay as they are."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("params: must be an object")
        parse_params(data)
        return data
