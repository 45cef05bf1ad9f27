"""`params.wait`: rollouts and Jobs waited for within the execution limit, progress streamed to the log.

On the fake, rollouts advance with each read of the object (see tests/fakes/kube_catalog.py); on a real
cluster the same manifests roll out for real (the pause and busybox images)."""

from __future__ import annotations

import pytest

from tests.integration.k8s.conftest import Cluster, entry, short_timeout
from tests.integration.k8s.manifests import NEVER_PULLS, as_yaml, configmap, deployment, job, workload
from tests.unit.executors.harness import Harness
from wire.tasks import TaskStatus


def test_a_deployment_rollout_is_waited_for_with_progress_lines(cluster: Cluster) -> None:
    ns = cluster.namespace
    out, ctx = cluster.run(as_yaml(configmap("conf"), deployment("web", replicas=2)), wait=True, timeout=120)
    assert out.status is TaskStatus.success, out.error
    lines = [m for _, m in ctx.lines]
    progress = [m for m in lines if m.startswith(f"Deployment {ns}/web: ")]
    assert progress[-1] == f"Deployment {ns}/web: successfully rolled out"
    assert len(progress) >= 2  # it was seen on its way, not only at the end
    assert lines.index(f"[2/2] Deployment {ns}/web created") < lines.index(progress[0])
    assert '"availableReplicas": 2' in out.result  # the result shows the object as it ended up


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_statefulsets_and_daemonsets_are_waited_for(cluster: Cluster, kind: str) -> None:
    out, ctx = cluster.run(as_yaml(workload(kind, "ws")), wait=True, timeout=120)
    assert out.status is TaskStatus.success, out.error
    assert any(m.startswith(f"{kind} {cluster.namespace}/ws: ") for _, m in ctx.lines)


def test_a_job_is_waited_for_until_complete(cluster: Cluster) -> None:
    out, ctx = cluster.run(as_yaml(job("once")), wait=True, timeout=120)
    assert out.status is TaskStatus.success, out.error
    assert ctx.lines[-1][1].startswith(f"Job {cluster.namespace}/once: complete")


def test_a_failing_job_fails_the_task(cluster: Cluster) -> None:
    out, _ = cluster.run(as_yaml(job("broken", succeed=False)), wait=True, timeout=120)
    assert out.status is TaskStatus.failed
    assert out.error.startswith(f"Job {cluster.namespace}/broken failed: BackoffLimitExceeded")


def test_a_rollout_that_never_finishes_times_out_saying_where_it_stood(cluster: Cluster) -> None:
    limit = short_timeout(cluster)
    out, _ = cluster.run(as_yaml(deployment("stuck", image=NEVER_PULLS)), wait=True, timeout=limit)
    assert out.status is TaskStatus.timeout, out.error
    # ...and how far it got, e.g. "(0 of 1 updated replicas are available)"
    assert out.error.startswith(
        f"execution timed out after {limit} s while waiting for Deployment {cluster.namespace}/stuck ("
    ), out.error
    assert entry(out)["action"] == "created"  # what was done before the limit is still reported


def test_cancel_while_waiting(cluster: Cluster) -> None:
    def cancel_on_progress(ctx: Harness, line: str) -> None:
        if line.startswith("Deployment ") and ": " in line:
            ctx.cancel_event.set()

    out, _ = cluster.run(
        as_yaml(deployment("slow", image=NEVER_PULLS)), wait=True, timeout=60, on_line=cancel_on_progress
    )
    assert out.status is TaskStatus.canceled
    assert out.error.startswith("canceled while waiting for Deployment")
