"""Which credentials a k8s task uses: an explicit kubeconfig, else the pod's service account, else KUBECONFIG."""

from __future__ import annotations

from pathlib import Path

import pytest

from executors.k8s import client
from executors.k8s.client import Source, choose_source

POD_ENV = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.fixture
def in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A service-account directory as the kubelet mounts it."""
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("deploy\n")
    monkeypatch.setattr(client, "SERVICE_ACCOUNT_DIR", tmp_path)
    return tmp_path


def test_in_a_pod_the_service_account_is_used(in_a_pod: Path) -> None:
    assert choose_source({}, POD_ENV) == Source(in_cluster=True)


def test_an_explicit_kubeconfig_or_context_beats_the_pod(in_a_pod: Path) -> None:
    assert choose_source({"kubeconfig": "/etc/tg/kc", "context": "prod"}, POD_ENV) == Source(
        False, "/etc/tg/kc", "prod"
    )
    env = {**POD_ENV, "KUBECONFIG": "/a:/b"}
    assert choose_source({"context": "prod"}, env) == Source(False, "/a:/b", "prod")


def test_outside_a_pod_kubeconfig_then_the_default_file(in_a_pod: Path) -> None:
    assert choose_source({}, {"KUBECONFIG": "/k"}) == Source(False, "/k")
    assert choose_source({}, {}) == Source(False, "~/.kube/config")


def test_a_pod_without_a_token_is_not_treated_as_in_cluster(in_a_pod: Path) -> None:
    (in_a_pod / "token").unlink()
    assert choose_source({}, POD_ENV) == Source(False, "~/.kube/config")
