"""Rollout judgement from an object's status, as `kubectl rollout status` judges it."""

from __future__ import annotations

from typing import Any

import pytest

from executors.k8s.wait import Progress, progress, waitable


def obj(kind: str, spec: dict[str, Any], status: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    group = "batch/v1" if kind == "Job" else "apps/v1"
    return {"apiVersion": group, "kind": kind, "metadata": {"generation": generation}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        (
            obj("Deployment", {"replicas": 3}, {"observedGeneration": 1}),
            Progress(False, "waiting for the Deployment spec update to be observed"),
        ),
        (
            obj("Deployment", {"replicas": 3}, {"observedGeneration": 2, "updatedReplicas": 1}),
            Progress(False, "1 of 3 new replicas have been updated"),
        ),
        (
            obj("Deployment", {"replicas": 2}, {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3}),
            Progress(False, "1 old replicas are pending termination"),
        ),
        (
            obj(
                "Deployment",
                {"replicas": 2},
                {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2},
            ),
            Progress(True, "successfully rolled out"),
        ),
        (
            obj(
                "Deployment",
                {},
                {
                    "observedGeneration": 2,
                    "conditions": [
                        {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "took too long"}
                    ],
                },
            ),
            Progress(False, "rollout exceeded its progress deadline: took too long", True),
        ),
        (
            obj("StatefulSet", {"replicas": 2, "updateStrategy": {"type": "OnDelete"}}, {}),
            Progress(True, "update strategy OnDelete is not rolled out by the controller"),
        ),
        (
            obj(
                "StatefulSet",
                {"replicas": 4, "updateStrategy": {"rollingUpdate": {"partition": 2}}},
                {"observedGeneration": 2, "readyReplicas": 4, "updatedReplicas": 2},
            ),
            Progress(True, "partitioned rollout complete: 2 new pods"),
        ),
        (
            obj(
                "StatefulSet",
                {"replicas": 1},
                {"observedGeneration": 2, "readyReplicas": 1, "updateRevision": "b", "currentRevision": "a"},
            ),
            Progress(False, "0 of 1 pods at revision b"),
        ),
        (
            obj(
                "DaemonSet",
                {},
                {
                    "observedGeneration": 2,
                    "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 1,
                },
            ),
            Progress(False, "1 of 3 updated pods are available"),
        ),
        (
            obj("Job", {"completions": 2}, {"active": 1, "succeeded": 1}),
            Progress(False, "1 of 2 completions, 1 active, 0 failed"),
        ),
        (
            obj("Job", {}, {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}),
            Progress(False, "failed: DeadlineExceeded", True),
        ),
    ],
)
def test_progress(workload: dict[str, Any], expected: Progress) -> None:
    assert progress(workload) == expected


def test_only_workloads_are_waited_for() -> None:
    assert waitable(obj("Deployment", {}, {}))
    assert not waitable({"apiVersion": "v1", "kind": "ConfigMap"})
    assert not waitable({"apiVersion": "example.com/v1", "kind": "Deployment"})  # a CRD's kind of that name
