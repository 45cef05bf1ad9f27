"""The `k8s` task type end to end: a real cloud, a real agent process whose agent config names a kubeconfig
for the FAKE Kubernetes API server started here (tests/fakes/kube_api.py; no real API server can run on
these machines), and tasks POSTed to the cloud's API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.harness import ADMIN, Cloud
from tests.fakes.kube_api import FakeKubeApi

NAMESPACE = "shop"
AGENT_ID = "k8s-agent"
PLAIN = "pl41n-s3cret-value"
ENCODED = "b64-t0ken-value"


@pytest.fixture(scope="module")
def fake(cloud: Cloud) -> Iterator[FakeKubeApi]:
    """A fake API server for each cloud (the module runs once per database backend)."""
    with FakeKubeApi() as api:
        namespaces = api.store.type_of("", "v1", "namespaces")
        api.store.create(
            namespaces, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, "t"
        )
        yield api


@pytest.fixture(scope="module")
def k8s_agent(cloud: Cloud, fake: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An agent of the shared cloud whose agent config points it at the fake, with `shop` as its namespace."""
    home = tmp_path_factory.mktemp("k8s-agent")
    kubeconfig = fake.write_kubeconfig(home / "kubeconfig")
    config = home / "agent.yaml"
    config.write_text(yaml.safe_dump({"kubeconfig": str(kubeconfig), "namespace": NAMESPACE}), encoding="utf-8")
    cloud.agent(AGENT_ID, TIANGONG_AGENT_CONFIG=str(config))
    return AGENT_ID


APP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {greeting: ni hao}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: main, image: registry.k8s.io/pause:3.9}]}
"""


def test_a_two_document_sync_task_creates_then_finds_both_unchanged(cloud: Cloud, k8s_agent: str) -> None:
    first = cloud.run(agent_id=k8s_agent, type="k8s", command=APP)
    assert first["status"] == "success", first["error"]
    assert first["data"] == [
        {"kind": "ConfigMap", "name": "web-config", "namespace": NAMESPACE, "action": "created"},
        {"kind": "Deployment", "name": "web", "namespace": NAMESPACE, "action": "created"},
    ]
    shown = json.loads(first["result"])
    assert shown["kind"] == "List" and [i["metadata"]["name"] for i in shown["items"]] == ["web-config", "web"]
    lines = [line["message"] for line in cloud.logs(first["id"])]
    assert lines[0].startswith("cluster http://127.0.0.1:") and "through kubeconfig" in lines[0]
    assert f"[2/2] Deployment {NAMESPACE}/web created" in lines

    again = cloud.run(agent_id=k8s_agent, type="k8s", command=APP)
    assert again["status"] == "success", again["error"]
    assert [(d["name"], d["action"]) for d in again["data"]] == [("web-config", "unchanged"), ("web", "unchanged")]


def test_a_secrets_values_stay_out_of_the_result_and_logs(cloud: Cloud, k8s_agent: str, fake: FakeKubeApi) -> None:
    b64 = base64.b64encode(ENCODED.encode()).decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db-creds"},
        "stringData": {"password": PLAIN},
        "data": {"token": b64},
    }
    task = cloud.run(agent_id=k8s_agent, type="k8s", command=yaml.safe_dump(secret))
    assert task["status"] == "success", task["error"]
    assert task["data"] == [{"kind": "Secret", "name": "db-creds", "namespace": NAMESPACE, "action": "created"}]
    stored = fake.store.objects[fake.store.key(fake.store.type_of("", "v1", "secrets"), NAMESPACE, "db-creds")]
    assert stored["stringData"] == {"password": PLAIN}  # the cluster did get the values...

    shown = json.loads(task["result"])
    assert shown["stringData"] == {"password": "******"} and shown["data"] == {"token": "******"}
    logs = json.dumps(cloud.logs(task["id"]))
    listed = cloud.http.get("/api/v1/tasks", params={"agent_id": k8s_agent, "page_size": 100}).json()
    rpc = cloud.rpc("task_query", token=ADMIN, task_data_query={"condition": [{"type": "k8s"}]})
    # ...and no way of reading the task back shows them: not its result or log, nor its own command.
    seen = {"created": task, "got": cloud.task(task["id"]), "listed": listed, "rpc": rpc, "logs": logs}
    for where, body in seen.items():
        text = body if isinstance(body, str) else json.dumps(body)
        for value in (PLAIN, b64, ENCODED, base64.b64encode(PLAIN.encode()).decode()):
            assert value not in text, where
    command = yaml.safe_load(cloud.task(task["id"])["command"])
    assert command["stringData"] == {"password": "******"} and command["data"] == {"token": "******"}
    assert command["metadata"] == {"name": "db-creds"}  # the rest of the manifest is shown as it was sent


def test_a_command_without_a_secret_is_shown_as_sent(cloud: Cloud, k8s_agent: str) -> None:
    task = cloud.run(agent_id=k8s_agent, type="k8s", command="# the config\n" + APP)
    assert task["status"] == "success", task["error"]
    assert cloud.task(task["id"])["command"] == "# the config\n" + APP
