"""A scoped token against tasks: may it act on this task, and which tasks may it list."""

from __future__ import annotations

from sqlalchemy import Connection

from cloud.access import Principal
from cloud.services import agents as agents_svc
from cloud.services.agents import AgentCache
from executors.registry import known_types
from wire.credentials import Action
from wire.tasks import TaskCreate


def require_on_task(
    conn: Connection, agents: AgentCache, principal: Principal, action: Action, agent_id: str, type_name: str | None
) -> None:
    """Forbidden unless the token may do `action` on a task of this agent and type (None: any). An agent's
    labels are read only when the token reaches agents by label."""
    if principal.is_admin:
        return
    labels = None
    if principal.scope.labels and not principal.reaches_agent(agent_id):
        row = agents.get(conn, agent_id)
        labels = row.labels if row is not None else None
    principal.require(action, agent_id=agent_id, labels=labels, type_name=type_name)


def require_create(
    conn: Connection, agents: AgentCache, principal: Principal, req: TaskCreate, *, answered: bool
) -> None:
    """Creating a task: `create` on its agent and type; `read` too when the caller gets the task's outcome
    back (a sync call); `files:read` when it names a file (its agent downloads it, the task can print it)."""
    require_on_task(conn, agents, principal, Action.create, req.agent_id, req.type)
    if answered:
        require_on_task(conn, agents, principal, Action.read, req.agent_id, req.type)
    if req.file_id:
        principal.require(Action.files_read)


def reach(conn: Connection, principal: Principal) -> tuple[list[str] | None, list[str] | None]:
    """The agent ids and task types a token's listing is limited to (None: every one)."""
    if principal.is_admin:
        return None, None
    agent_ids = None
    if not principal.all_agents:
        agent_ids = [a.id for a in agents_svc.list_agents(conn) if principal.reaches_agent(a.id, a.labels)]
        # A deleted agent's tasks stay readable by a token naming it exactly.
        agent_ids += [p for p in principal.scope.agents if not any(c in p for c in "*?[")]
    types = None if principal.all_types else [t for t in known_types() if principal.reaches_type(t)]
    return agent_ids, types


def require_schedule(conn: Connection, agents: AgentCache, principal: Principal, task: TaskCreate) -> None:
    """Saving (or changing, enabling, deleting) a schedule: `schedule` on its task's agent and type, and
    `files:read` when the task names a file. Each firing checks the same again (cloud.services.scheduler)."""
    require_on_task(conn, agents, principal, Action.schedule, task.agent_id, task.type)
    if task.file_id:
        principal.require(Action.files_read)
