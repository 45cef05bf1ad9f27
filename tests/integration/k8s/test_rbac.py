"""The agent's Role in deploy/ is enough for every operation and no more: tasks run as the service account
the RoleBinding names, on the fake API server authorising each request by the Role's own rules (read
from the YAML files), so an edit to the Role that drops a verb or kind the executor needs fails here.
Always the fake: a real cluster's RBAC would need the manifests installed and the account's token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from executors.base import Outcome
from tests.fakes.kube_rbac import Account, account_from_files, verbs_used
from tests.integration.k8s.conftest import Cluster, entry
from tests.integration.k8s.manifests import PAUSE, as_yaml, configmap, deployment, job
from tests.unit.executors.harness import Harness
from wire.tasks import TaskStatus

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "deploy" / "agent-rbac" / "role.yaml"
BINDING = ROOT / "deploy" / "agent-rbac" / "rolebinding.yaml"
EXECUTOR_VERBS = {"get", "create", "update", "patch", "delete"}
"""What the executor's operations need (docs/kubernetes.md, RBAC)."""
TOKEN = "agent-sa-token-51d0"


def _pod_template(name: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": PAUSE}]}}


def _selector(name: str) -> dict[str, Any]:
    return {"matchLabels": {"app": name}}


# One small valid object of each kind the Role covers, by (API group, plural).
COVERED: dict[tuple[str, str], Callable[[str], dict[str, Any]]] = {
    ("", "configmaps"): lambda n: configmap(n, a="1"),
    ("", "secrets"): lambda n: {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n}, "data": {}},
    ("", "services"): lambda n: {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": n},
        "spec": {"selector": {"app": n}, "ports": [{"port": 80}]},
    },
    ("", "serviceaccounts"): lambda n: {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n}},
    ("", "persistentvolumeclaims"): lambda n: {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": n},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
    },
    ("", "pods"): lambda n: {"apiVersion": "v1", "kind": "Pod", **_pod_template(n), "metadata": {"name": n}},
    ("apps", "deployments"): lambda n: deployment(n),
    ("apps", "statefulsets"): lambda n: {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": n},
        "spec": {"serviceName": n, "selector": _selector(n), "template": _pod_template(n)},
    },
    ("apps", "daemonsets"): lambda n: {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": n},
        "spec": {"selector": _selector(n), "template": _pod_template(n)},
    },
    ("batch", "jobs"): lambda n: job(n),
    ("batch", "cronjobs"): lambda n: {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": n},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": job(n)["spec"]}},
    },
    ("networking.k8s.io", "ingresses"): lambda n: {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": n},
        "spec": {"defaultBackend": {"service": {"name": n, "port": {"number": 80}}}},
    },
    ("networking.k8s.io", "networkpolicies"): lambda n: {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": n},
        "spec": {"podSelector": _selector(n), "policyTypes": ["Ingress"]},
    },
    ("autoscaling", "horizontalpodautoscalers"): lambda n: {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": n},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": n},
            "minReplicas": 1,
            "maxReplicas": 2,
        },
    },
    ("policy", "poddisruptionbudgets"): lambda n: {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": n},
        "spec": {"minAvailable": 1, "selector": _selector(n)},
    },
}


@dataclass
class Agent:
    """Tasks run as the Role's service account, with the Role's namespace as the agent's default."""

    cluster: Cluster
    account: Account
    config: dict[str, Any]

    def run(self, command: str, **params: Any) -> tuple[Outcome, Harness]:
        return self.cluster.run(command, config=self.config, **params)

    def used(self) -> set[str]:
        assert self.cluster.fake is not None
        return verbs_used(self.cluster.fake.decisions, self.account.user)


@pytest.fixture
def agent(fake_cluster: Cluster, tmp_path: Path) -> Agent:
    fake = fake_cluster.fake
    assert fake is not None
    account = account_from_files(ROLE, BINDING)
    fake.add_account(TOKEN, account)
    fake_cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": account.namespace}})
    fake_cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tiangong"}})
    kubeconfig = fake.write_kubeconfig(tmp_path / "agent-kubeconfig", token=TOKEN)
    return Agent(fake_cluster, account, {"kubeconfig": str(kubeconfig), "namespace": account.namespace})


def test_the_role_is_read_from_deploy_and_grants_only_the_executors_verbs(agent: Agent) -> None:
    assert agent.account.user == "system:serviceaccount:tiangong:tiangong-agent"
    assert agent.account.namespace == "apps"
    granted = {(g, r) for rule in agent.account.rules for g in rule.groups for r in rule.resources}
    assert granted == set(COVERED)  # a kind added to the Role needs an object here, and one removed fails
    for rule in agent.account.rules:
        assert rule.verbs == EXECUTOR_VERBS, rule  # no list/watch/escalate/bind, no "*"
        assert "*" not in rule.groups | rule.resources


def test_every_operation_on_every_covered_kind_succeeds_as_the_agents_account(agent: Agent) -> None:
    fake, ns = agent.cluster.fake, agent.account.namespace
    assert fake is not None
    objects = [make(f"tg-{plural}") for (_, plural), make in sorted(COVERED.items())]

    created, _ = agent.run(as_yaml(*objects))
    assert created.status is TaskStatus.success, created.error
    assert [d["action"] for d in created.data] == ["created"] * len(objects)
    assert {d["namespace"] for d in created.data} == {ns}
    relabelled = [{**o, "metadata": {**o["metadata"], "labels": {"tier": "x"}}} for o in objects]
    configured, _ = agent.run(as_yaml(*relabelled))
    assert configured.status is TaskStatus.success, configured.error
    assert [d["action"] for d in configured.data] == ["configured"] * len(objects)
    assert agent.used() == {"get", "create", "patch"}  # apply: get, then patch (and create, creating)

    made, _ = agent.run(as_yaml(configmap("made", a="1"), deployment("web")), operation="create")
    assert made.status is TaskStatus.success, made.error
    updated, _ = agent.run(as_yaml(configmap("made", a="2")), operation="update")
    assert updated.status is TaskStatus.success, updated.error
    assert entry(updated)["action"] == "updated"

    named = as_yaml(configmap("made", b="3"))
    ops = [{"op": "add", "path": "/data/c", "value": "4"}]
    for patch_type, extra in (("strategic", {}), ("merge", {}), ("json", {"patch": ops})):
        patched, _ = agent.run(named, operation="patch", patch_type=patch_type, **extra)
        assert patched.status is TaskStatus.success, f"{patch_type}: {patched.error}"
    live = agent.cluster.get("v1", "ConfigMap", "made", ns)
    assert live is not None and live["data"] == {"a": "2", "b": "3", "c": "4"}

    rolled, ctx = agent.run(as_yaml(deployment("web", replicas=2)), wait=True)
    assert rolled.status is TaskStatus.success, rolled.error
    assert f"Deployment {ns}/web: successfully rolled out" in [m for _, m in ctx.lines]

    gone, _ = agent.run(as_yaml(*objects, configmap("made"), deployment("web")), operation="delete")
    assert gone.status is TaskStatus.success, gone.error
    assert {d["action"] for d in gone.data} == {"deleted"}

    assert agent.used() == EXECUTOR_VERBS  # every verb the Role grants was needed
    assert [d for d in fake.decisions if not d.allowed] == []


@pytest.mark.parametrize(
    ("manifest", "operation", "refusal"),
    [
        pytest.param(
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "mine"}},
            "create",
            "create clusterroles.rbac.authorization.k8s.io cluster-wide",
            id="cluster-scoped",
        ),
        pytest.param(
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "more"}, "rules": []},
            "apply",
            "get roles.rbac.authorization.k8s.io in namespace apps",
            id="rbac-itself",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tiangong-tokens", "namespace": "tiangong"}},
            "apply",
            "get secrets in namespace tiangong",
            id="the-agents-own-namespace",
        ),
    ],
)
def test_what_the_role_leaves_out_is_refused_naming_verb_and_resource(
    agent: Agent, manifest: dict[str, Any], operation: str, refusal: str
) -> None:
    out, _ = agent.run(as_yaml(manifest), operation=operation)
    assert out.status is TaskStatus.failed
    assert f"forbidden: the agent's Kubernetes account may not {refusal}" in out.error
    assert "(grant it in the agent's Role)" in out.error
    assert f'User "{agent.account.user}" cannot' in out.error  # the API's own words follow
    assert entry(out, -1)["action"] == "failed" and entry(out, -1)["reason"] == "Forbidden"
