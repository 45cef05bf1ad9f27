"""The cloud's command policy, built from its settings (TIANGONG_POLICY_*); see docs/command-policy.md."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from cloud.services.errors import Forbidden
from cloud.settings import CloudSettings
from executors.policy import CommandPolicy
from wire.tasks import TaskRequest

OFFLOAD_CHARS = 64 * 1024
"""A command longer than this is checked in a worker thread: a hostile megabyte takes a fraction of a
second, which must not stall the event loop."""


def cloud_policy(settings: CloudSettings) -> CommandPolicy:
    """The policy `create_task` checks every new task against (build it once, at start)."""
    return CommandPolicy.from_settings(
        mode=settings.policy_mode,
        use_defaults=settings.policy_defaults,
        deny=settings.policy_deny,
        allow=settings.policy_allow,
        refuse_types=settings.policy_refuse_types,
    )


async def enforce(policy: CommandPolicy, req: TaskRequest) -> None:
    """Forbidden (403, naming the rule) when the policy refuses the task; nothing is stored then."""
    args = req.params.get("args")
    size = len(req.command) + (sum(len(str(a)) for a in args) if isinstance(args, list) else 0)
    if size > OFFLOAD_CHARS:
        refusal = await run_in_threadpool(policy.check, req.type, req.command, req.params)
    else:
        refusal = policy.check(req.type, req.command, req.params)
    if refusal is not None:
        raise Forbidden(refusal.message, rule=refusal.rule)
