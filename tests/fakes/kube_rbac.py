"""RBAC for the FAKE Kubernetes API server (tests/fakes/kube_api.py): a service account whose rights are
those of a namespaced Role bound to it, read from the Role and RoleBinding YAML files themselves.

Modelled on the real RBAC authorizer for what a Role can say: rules of apiGroups x resources x verbs
(`*` matching anything), granting only inside the Role's namespace, so nothing cluster-scoped. Not
modelled: resourceNames, subresources, nonResourceURLs, aggregation, ClusterRoles bound by RoleBindings.
Discovery is not authorised here: every authenticated account may read it (the system:discovery role).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.fakes.kube_catalog import ResourceType
from tests.fakes.kube_store import ApiError

HTTP_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
"""The verb a request needs, as the real API server maps it (a GET of a collection is `list`)."""


def verb_of(method: str, name: str) -> str:
    collection = {"GET": "list", "DELETE": "deletecollection"}
    return collection[method] if method in collection and not name else HTTP_VERBS[method]


def _matches(granted: frozenset[str], wanted: str) -> bool:
    return "*" in granted or wanted in granted


@dataclass(frozen=True)
class Rule:
    """One entry of a Role's `rules`."""

    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]

    def allows(self, verb: str, group: str, plural: str) -> bool:
        return _matches(self.groups, group) and _matches(self.resources, plural) and _matches(self.verbs, verb)


@dataclass(frozen=True)
class Account:
    """A service account and what its Role lets it do, in the Role's namespace only."""

    user: str
    """As the API names it: `system:serviceaccount:<namespace>:<name>`."""
    namespace: str
    rules: tuple[Rule, ...]

    def allows(self, verb: str, rt: ResourceType, namespace: str) -> bool:
        if not rt.namespaced or namespace != self.namespace:
            return False  # a Role grants nothing cluster-scoped, nor in any other namespace
        return any(rule.allows(verb, rt.group, rt.plural) for rule in self.rules)

    @property
    def verbs(self) -> set[str]:
        return {verb for rule in self.rules for verb in rule.verbs}


def _one(path: Path, kind: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one {kind}, found {len(found)}")
    return found[0]


def account_from_files(role_file: Path, binding_file: Path) -> Account:
    """The service account the RoleBinding in `binding_file` binds to the Role in `role_file`."""
    role, binding = _one(role_file, "Role"), _one(binding_file, "RoleBinding")
    namespace = role["metadata"]["namespace"]
    ref = binding["roleRef"]
    if (ref["kind"], ref["name"], binding["metadata"]["namespace"]) != ("Role", role["metadata"]["name"], namespace):
        raise ValueError(f"{binding_file} does not bind the Role in {role_file}")
    accounts = [s for s in binding["subjects"] if s["kind"] == "ServiceAccount"]
    if len(accounts) != 1:
        raise ValueError(f"{binding_file}: expected one ServiceAccount subject, found {len(accounts)}")
    subject = accounts[0]
    rules = tuple(
        Rule(frozenset(r.get("apiGroups") or ()), frozenset(r.get("resources") or ()), frozenset(r.get("verbs") or ()))
        for r in role.get("rules") or ()
    )
    return Account(f"system:serviceaccount:{subject['namespace']}:{subject['name']}", namespace, rules)


def forbidden(user: str, verb: str, rt: ResourceType, namespace: str, name: str) -> ApiError:
    """The 403 the real API server answers, in its words."""
    subject = f'{rt.resource} "{name}"' if name else rt.resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    refused = f'cannot {verb} resource "{rt.plural}" in API group "{rt.group}" {scope}'
    message = f'{subject} is forbidden: User "{user}" {refused}'
    return ApiError(403, "Forbidden", message, {"name": name, "group": rt.group, "kind": rt.plural})


@dataclass(frozen=True)
class Decision:
    """One authorisation the fake made, for tests to see which verbs an account really used."""

    user: str
    verb: str
    resource: str
    namespace: str
    allowed: bool


def verbs_used(decisions: Iterable[Decision], user: str) -> set[str]:
    return {d.verb for d in decisions if d.user == user and d.allowed}
