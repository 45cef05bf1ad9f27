"""The cached connection: one client per cluster, built again when the kubeconfig file changes."""

from __future__ import annotations

import os
from pathlib import Path

from executors.k8s.client import connect
from tests.integration.k8s.conftest import Cluster
from tests.integration.k8s.manifests import as_yaml, configmap
from wire.tasks import TaskStatus


def test_one_client_per_cluster_until_the_kubeconfig_changes(fake_cluster: Cluster, tmp_path: Path) -> None:
    assert fake_cluster.fake is not None
    kubeconfig = fake_cluster.fake.write_kubeconfig(tmp_path / "agent-kubeconfig")
    config = {"kubeconfig": str(kubeconfig)}
    first = connect(config)
    assert connect(config) is first
    stat = kubeconfig.stat()
    os.utime(kubeconfig, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # e.g. rotated credentials
    assert connect(config) is not first


def test_the_log_says_which_cluster_and_credentials(cluster: Cluster) -> None:
    out, ctx = cluster.run(as_yaml(configmap("c")))
    assert out.status is TaskStatus.success, out.error
    first = ctx.lines[0][1]
    assert first.startswith("cluster http") and f"through kubeconfig {cluster.kubeconfig}" in first
