"""`params.wait`: whether a workload has rolled out (or a Job completed), judged as `kubectl rollout
status` does, from the object's status alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WAITABLE = {("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet"), ("batch", "Job")}


@dataclass(frozen=True)
class Progress:
    """Where a rollout stands: `done`, `failed` (it will not get there by waiting), and what to tell."""

    done: bool
    message: str
    failed: bool = False


def waitable(obj: dict[str, Any]) -> bool:
    """Whether `wait` has something to wait for on this object."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return (group, obj.get("kind")) in WAITABLE


def progress(obj: dict[str, Any]) -> Progress:
    """The rollout progress of a Deployment, StatefulSet, DaemonSet or Job."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    kind = obj.get("kind")
    if kind == "Job":
        return _job(spec, status)
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if kind != "Deployment" and strategy != "RollingUpdate":  # OnDelete: the controller rolls nothing out
        return Progress(True, f"update strategy {strategy} is not rolled out by the controller")
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return Progress(False, f"waiting for the {kind} spec update to be observed")
    if kind == "Deployment":
        return _deployment(spec, status)
    if kind == "StatefulSet":
        return _statefulset(spec, status)
    return _daemonset(spec, status)


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _deployment(spec: dict[str, Any], status: dict[str, Any]) -> Progress:
    progressing = _condition(status, "Progressing")
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Progress(False, f"rollout exceeded its progress deadline: {progressing.get('message', '')}", True)
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return Progress(False, f"{updated} of {wanted} new replicas have been updated")
    if total > updated:
        return Progress(False, f"{total - updated} old replicas are pending termination")
    if available < updated:
        return Progress(False, f"{available} of {updated} updated replicas are available")
    return Progress(True, "successfully rolled out")


def _statefulset(spec: dict[str, Any], status: dict[str, Any]) -> Progress:
    strategy = spec.get("updateStrategy") or {}
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    if ready < wanted:
        return Progress(False, f"{ready} of {wanted} pods are ready")
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    if partition:
        updated = int(status.get("updatedReplicas") or 0)
        if updated < wanted - partition:
            return Progress(False, f"{updated} of {wanted - partition} pods updated (partition {partition})")
        return Progress(True, f"partitioned rollout complete: {updated} new pods")
    if status.get("updateRevision") != status.get("currentRevision"):
        updated = int(status.get("updatedReplicas") or 0)
        return Progress(False, f"{updated} of {wanted} pods at revision {status.get('updateRevision')}")
    return Progress(True, f"rolled out: {ready} pods at revision {status.get('currentRevision')}")


def _daemonset(spec: dict[str, Any], status: dict[str, Any]) -> Progress:
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    if updated < desired:
        return Progress(False, f"{updated} of {desired} updated pods are scheduled")
    if available < desired:
        return Progress(False, f"{available} of {desired} updated pods are available")
    return Progress(True, "successfully rolled out")


def _job(spec: dict[str, Any], status: dict[str, Any]) -> Progress:
    failed = _condition(status, "Failed")
    if failed.get("status") == "True":
        return Progress(False, f"failed: {failed.get('reason', '')} {failed.get('message', '')}".strip(), True)
    if _condition(status, "Complete").get("status") == "True":
        return Progress(True, f"complete: {int(status.get('succeeded') or 0)} succeeded")
    completions = spec.get("completions", 1)
    return Progress(
        False,
        f"{int(status.get('succeeded') or 0)} of {completions} completions, "
        f"{int(status.get('active') or 0)} active, {int(status.get('failed') or 0)} failed",
    )
