"""`k8s` (seed 004 §3): apply, create, update, delete or patch the objects in `command` on a cluster.

`command` holds the manifests (YAML or JSON, several documents or a `kind: List`; a `file_id` may hold
them too, read before `command`); `params.operation` picks what to do, `apply` (server-side apply) by
default. Objects are handled in order and the first failure stops the task. `result` is the resulting
objects as JSON; `data` lists `{kind, name, namespace, action}` per object.

`validate` runs in the cloud: it parses and checks, and never imports the kubernetes package.
"""

from __future__ import annotations

from typing import Any, ClassVar

import yaml

from executors.base import BaseExecutor, Outcome, RunContext, Stopped
from executors.k8s.calls import Calls
from executors.k8s.documents import MAX_MANIFEST_BYTES, ManifestError, check_object, parse_manifests
from executors.k8s.errors import K8sError, Target
from executors.k8s.operations import Done, Operator, explain
from executors.k8s.params import K8sParams, K8sParamsModel, parse_params
from executors.k8s.present import is_secret, ref, result_text, shown
from executors.k8s.wait import progress, waitable
from wire.secrets import mask_text
from wire.tasks import Assignment, LogLevel, LogStream, TaskRequest, TaskStatus


def _check_objects(objects: list[dict[str, Any]], params: K8sParams) -> None:
    if not objects:
        raise ManifestError("command: no Kubernetes object found (only empty documents)")
    for number, obj in enumerate(objects, 1):
        check_object(obj, number, named=params.operation != "create")
    if params.patch_type == "json" and len(objects) != 1:
        raise ManifestError(f"command: a JSON patch changes one object; the command names {len(objects)}")


class KubernetesExecutor(BaseExecutor):
    """Kubernetes objects through the official client's dynamic client (any kind, CRDs included)."""

    type: ClassVar[str] = "k8s"
    default_exec_timeout: ClassVar[int] = 120
    params_model = K8sParamsModel

    def __init__(self, poll_seconds: float = 2.0) -> None:
        self.poll_seconds = poll_seconds
        """How often a rollout's status is read while `params.wait` waits for it."""

    def shown_command(self, command: str) -> str:
        """`command` as the API shows it: a Secret's values masked, as in the result. Manifests without a
        Secret come back untouched; with one, as YAML of the same objects (comments dropped)."""
        if "Secret" not in command:  # cheap: most reads of most tasks stop here
            return command
        try:
            objects = parse_manifests(command)
        except ManifestError:
            return command  # such a command is refused at POST time, so it is never stored
        if not any(is_secret(obj) for obj in objects):
            return command
        return yaml.safe_dump_all([shown(o) if is_secret(o) else o for o in objects], sort_keys=False)

    def check(self, req: TaskRequest, params: K8sParamsModel) -> None:
        """The manifests in `command` parse and name what the operation needs."""
        checked = parse_params(req.params)
        if not req.command.strip():
            if req.file_id:
                return  # the file is read on the agent; the cloud does no I/O here
            raise ValueError("command: the manifests (YAML or JSON) are required, or a file_id holding them")
        objects = parse_manifests(req.command)
        if not req.file_id:
            _check_objects(objects, checked)

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        try:
            params = parse_params(task.params)
            objects = parse_manifests(await _manifest_text(task, ctx))
            _check_objects(objects, params)
        except (ValueError, OSError) as exc:
            return Outcome(TaskStatus.failed, error=str(exc))
        return await _Run(task, ctx, params, objects, self.poll_seconds).go()


async def _manifest_text(task: Assignment, ctx: RunContext) -> str:
    """The file's manifests (if any), then the command's."""
    if not task.file_id:
        return task.command
    path = await ctx.fetch_file(task.file_id)
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"file_id: manifests larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB are refused")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError("file_id: the file is not UTF-8 text") from None
    return f"{text}\n---\n{task.command}" if task.command.strip() else text


class _Run:
    """One task's run: connect, handle each object in order, then wait for rollouts if asked."""

    def __init__(
        self, task: Assignment, ctx: RunContext, params: K8sParams, objects: list[dict[str, Any]], poll: float
    ) -> None:
        self.task, self.ctx, self.params, self.objects, self.poll = task, ctx, params, objects, poll
        self.calls = Calls(ctx.cancel_event, ctx.deadline)
        self.done: list[Done] = []
        self.stage = "connecting to the cluster"
        """What the task was doing, for the error when it is canceled or times out."""

    async def go(self) -> Outcome:
        try:
            return await self._go()
        except Stopped as stop:
            what = "canceled" if stop.reason == "canceled" else f"execution timed out after {self.task.exec_timeout} s"
            flight = "; a request was in flight and may still take effect" if stop.in_flight else ""
            status = TaskStatus.canceled if stop.reason == "canceled" else TaskStatus.timeout
            return self._outcome(status, f"{what} while {self.stage}{flight}")

    async def _go(self) -> Outcome:
        from executors.k8s.client import connect  # imports the kubernetes package only when it is used

        try:
            cluster = await self.calls(lambda: connect(self.ctx.config))
        except Stopped:
            raise
        except Exception as exc:
            return self._outcome(TaskStatus.failed, str(explain(exc, None, "the configured cluster")))
        self.ctx.log(f"cluster {mask_text(cluster.host)} through {cluster.source.describe()}", LogStream.system)
        default_namespace = self.params.namespace or self.ctx.config.get("namespace") or cluster.default_namespace
        operator = Operator(cluster, self.calls, self.params, str(default_namespace), self.ctx.log)
        for number, obj in enumerate(self.objects, 1):
            failure = await self._one(operator, number, obj)
            if failure is not None:
                return failure
        for done in self.done if self.params.wait else []:
            if done.obj is not None and waitable(done.obj):
                failure = await self._wait(operator, done)
                if failure is not None:
                    return failure
        return self._outcome(TaskStatus.success)

    async def _one(self, operator: Operator, number: int, obj: dict[str, Any]) -> Outcome | None:
        """Handle object `number`; a failure ends the task (None: it went well)."""
        total, meta = len(self.objects), obj["metadata"]
        target: Target | None = None
        where = ref(obj["kind"], meta.get("namespace", ""), meta.get("name") or meta.get("generateName", ""))
        self.stage = f"handling object {number} of {total} ({where})"
        try:
            resource, target = await operator.locate(obj)
            where = ref(target.kind, target.namespace, target.name)
            self.stage = f"handling object {number} of {total} ({where})"
            done = await operator.handle(obj, resource, target)
        except K8sError as exc:
            self.ctx.log(f"[{number}/{total}] {where} failed: {exc}", LogStream.stderr, LogLevel.error)
            left = total - number
            later = f" ({left} later object{'s' if left > 1 else ''} not processed)" if left else ""
            entry = {
                "kind": obj["kind"],
                "name": target.name if target else meta.get("name") or meta.get("generateName", ""),
                "namespace": target.namespace if target else meta.get("namespace", ""),
                "action": "failed",
                "error": str(exc),
                "reason": exc.reason,  # the API's Status reason (AlreadyExists, Forbidden, Invalid...), if any
            }
            return self._outcome(TaskStatus.failed, f"failed to {self.params.operation} {where}: {exc}{later}", entry)
        self.done.append(done)
        self.ctx.log(
            f"[{number}/{total}] {ref(done.target.kind, done.target.namespace, done.target.name)} {done.action}"
        )
        return None

    async def _wait(self, operator: Operator, done: Done) -> Outcome | None:
        """Poll one workload until it is rolled out (None) or cannot get there (a failed Outcome)."""
        where = ref(done.target.kind, done.target.namespace, done.target.name)
        obj = done.obj
        last = ""
        while obj is not None:
            state = progress(obj)
            self.stage = f"waiting for {where} ({state.message})"
            if state.message != last:  # a line when the rollout moves, not one per poll
                self.ctx.log(f"{where}: {state.message}", level=LogLevel.error if state.failed else None)
                last = state.message
            done.obj = obj  # the result shows the object as it ended up
            if state.failed:
                return self._outcome(TaskStatus.failed, f"{where} {state.message}")
            if state.done:
                return None
            await self.calls.sleep(self.poll)
            try:
                obj = await operator.fetch(done.resource, done.target)
            except K8sError as exc:
                return self._outcome(TaskStatus.failed, f"while waiting for {where}: {exc}")
        return self._outcome(TaskStatus.failed, f"{where} was deleted while we waited for it")

    def _outcome(self, status: TaskStatus, error: str = "", failed: dict[str, Any] | None = None) -> Outcome:
        data: list[dict[str, Any]] = [
            {
                "kind": d.target.kind,
                "name": d.target.name,
                "namespace": d.target.namespace,
                "action": d.action,
            }
            for d in self.done
        ]
        if failed is not None:
            data.append(failed)
        result = result_text([shown(d.obj) for d in self.done if d.obj is not None])
        return Outcome(status, result=result, data=data, error=error)
