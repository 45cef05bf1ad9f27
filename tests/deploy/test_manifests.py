"""deploy/ and the Dockerfile: every manifest valid against the Kubernetes OpenAPI schemas (offline, with
kubernetes-validate), every file listed by its kustomization, and the settings that matter agreeing with
the code (flags, env names, ports, health routes, the agent's drain)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent.health import ALIVE_FILE, READY_FILE
from agent.loop import SHUTDOWN_OVERRUN_SECONDS
from agent.settings import AgentSettings
from cloud.settings import CloudSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
"""The oldest Kubernetes we document, and the newest the validator knows."""


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def find(kind: str, name: str) -> dict[str, Any]:
    for path in MANIFESTS:
        for doc in documents(path):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in deploy/")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
@pytest.mark.parametrize("version", VERSIONS)
def test_manifest_is_valid(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field


def test_every_file_is_listed_by_its_kustomization() -> None:
    for directory in [DEPLOY, *sorted(p for p in DEPLOY.rglob("*") if p.is_dir())]:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
        listed = {str(r).rstrip("/") for r in kustomization.get("resources", [])}
        present = {p.name for p in directory.iterdir() if p.name != "kustomization.yaml"}
        assert listed == present or (directory == DEPLOY and listed <= present), (directory, listed, present)
        for entry in listed:
            assert (directory / entry).exists(), f"{directory}/kustomization.yaml lists missing {entry}"
    top = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    assert "agent-cluster-wide" not in top["resources"]  # the variant is opt-in


def test_the_agent_deployment() -> None:
    deployment = find("Deployment", "tiangong-agent")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    variables = env(c)
    assert c["args"] == ["agent"]
    assert variables["TIANGONG_AGENT_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["TIANGONG_AGENT_TOKEN"]["secretKeyRef"]["key"] == "agent-token"
    service = find("Service", "tiangong-cloud")
    assert variables["TIANGONG_SERVER"] == f"http://tiangong-cloud.tiangong.svc:{service['spec']['ports'][0]['port']}"
    drain = float(variables["TIANGONG_SHUTDOWN_GRACE_SECONDS"])
    assert drain == AgentSettings.model_fields["shutdown_grace_seconds"].default
    assert pod["terminationGracePeriodSeconds"] > drain + SHUTDOWN_OVERRUN_SECONDS
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "tiangong-agent"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert "exec" in c["livenessProbe"] and "exec" in c["readinessProbe"]  # run: see the next test
    for name in variables:  # every variable is one the agent reads
        field = name.removeprefix("TIANGONG_").lower()
        assert field in AgentSettings.model_fields or field == "agent_token", name


def test_the_agent_probes_read_its_health_files(tmp_path: Path) -> None:
    """Both probes run here as the kubelet would run them, on the files the agent writes (agent/health.py)."""
    c = container(find("Deployment", "tiangong-agent"))
    data_dir = env(c)["TIANGONG_DATA_DIR"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == data_dir  # a volume, so the probes see the agent's files

    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert ready["exec"]["command"] == ["test", "-f", f"{data_dir}/{READY_FILE}"]
    command = live["exec"]["command"]
    assert command[:2] == ["python", "-c"] and f'"{data_dir}/{ALIVE_FILE}"' in command[2]
    # Never restarted while heartbeating: a pass takes at most the cloud's heartbeat period plus the
    # request's 15 s timeout; the cloud's default period (5 s) leaves room for periods of up to ~100 s.
    assert CloudSettings.model_fields["heartbeat_seconds"].default + 15 < 120

    def probe(argv: list[str]) -> int:
        argv = [a.replace(f"{data_dir}/", f"{tmp_path}/") for a in argv]
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        return subprocess.run(argv, timeout=live["timeoutSeconds"], check=False).returncode

    alive = tmp_path / ALIVE_FILE
    assert probe(command) != 0  # not started yet
    alive.touch()
    assert probe(command) == 0
    os.utime(alive, (time.time() - 119, time.time() - 119))
    assert probe(command) == 0
    os.utime(alive, (time.time() - 121, time.time() - 121))
    assert probe(command) != 0  # wedged: the kubelet restarts it
    assert probe(ready["exec"]["command"]) != 0
    (tmp_path / READY_FILE).touch()
    assert probe(ready["exec"]["command"]) == 0


def test_the_agent_config_is_one_the_agent_accepts() -> None:
    from agent.config import AgentConfig

    data = find("ConfigMap", "tiangong-agent-config")["data"]["agent.yaml"]
    config = AgentConfig.model_validate(yaml.safe_load(data))
    role = find("Role", "tiangong-agent")
    assert config.namespace == role["metadata"]["namespace"]  # objects land where the agent may write


def test_the_role_grants_the_executors_verbs_and_no_more() -> None:
    for kind in ("Role", "ClusterRole"):
        for rule in find(kind, "tiangong-agent")["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert set(rule["verbs"]) <= {"get", "create", "update", "patch", "delete"}
            assert not {"roles", "rolebindings", "clusterroles", "clusterrolebindings"} & set(rule["resources"])
    binding = find("RoleBinding", "tiangong-agent")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tiangong-agent", "namespace": "tiangong"}]


def test_the_cloud_deployment() -> None:
    deployment = find("Deployment", "tiangong-cloud")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    variables = env(c)
    assert c["args"] == ["cloud"]
    assert c["ports"][0]["containerPort"] == int(variables["TIANGONG_PORT"])
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert variables["TIANGONG_DATABASE_URL"]["secretKeyRef"]["optional"] is True
    # Replicas must share the key sealing stored secrets (cloud/settings.py): it can come from the Secret.
    assert variables["TIANGONG_SECRET_KEY"]["secretKeyRef"] == {
        "name": "tiangong-tokens",
        "key": "secret-key",
        "optional": True,
    }
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # SQLite on a ReadWriteOnce volume
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == variables["TIANGONG_DATA_DIR"]
    claim = {v["name"]: v for v in pod["volumes"]}["data"]["persistentVolumeClaim"]["claimName"]
    assert find("PersistentVolumeClaim", claim)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    for name in variables:
        field = name.removeprefix("TIANGONG_").lower()
        assert field in CloudSettings.model_fields or field in ("host", "port"), name


def test_the_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2  # multi-stage
    assert "uv sync --frozen" in text and "--no-dev" in text
    assert "\nUSER 10001" in text  # the uid the manifests' runAsUser expect
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["tiangong"]' in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignored and ".git" in ignored
