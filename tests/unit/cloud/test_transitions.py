"""The task state machine, walked on real SQLite and PostgreSQL: every pair the table allows works, every
other pair is refused before any SQL runs, and an allowed change of a task no longer in the expected
status matches nothing. No module of the cloud but transitions.py writes a status."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Connection, text

import cloud
from cloud.db.engine import Database
from cloud.sealing import Sealer
from cloud.services.agents import AgentCache
from cloud.services.tasks import create_task, fetch
from cloud.services.transitions import ALLOWED, IllegalTransition, transition
from wire.tasks import TaskCreate, TaskStatus

SEALER = Sealer([Fernet.generate_key()])
STATUSES = list(TaskStatus)


def new_task(conn: Connection, status: TaskStatus) -> int:
    """A task of agent a1, put straight into `status` (the test's own setup, not a transition)."""
    req = TaskCreate(agent_id="a1", type="shell", command="true")
    row, _ = create_task(conn, req, agents=AgentCache(), offline_after=60, sealer=SEALER)
    conn.execute(text("UPDATE tasks SET status = :s WHERE id = :n"), {"s": status.value, "n": row.id})
    return int(row.id)


def snapshot(conn: Connection, n: int) -> tuple[Any, ...]:
    row = fetch(conn, n)
    assert row is not None
    return tuple(row)


def test_the_table_names_every_status_and_no_final_status_follows_a_final_one() -> None:
    assert set(ALLOWED) == set(TaskStatus)
    for src, dsts in ALLOWED.items():
        assert dsts <= set(TaskStatus)
        if src.is_final:
            assert dsts == {TaskStatus.pending}, src  # only a retry on request reopens a finished task


def test_every_allowed_transition_works_and_every_other_is_refused(db: Database) -> None:
    for src, dst in itertools.product(STATUSES, STATUSES):
        with db.transaction() as conn:
            n = new_task(conn, src)
            before = snapshot(conn, n)
            if dst in ALLOWED[src]:
                row = transition(conn, n, to=dst, expect_from=src)
                assert row is not None, (src, dst)
                assert row.status == dst.value
                assert (row.finished_at is not None) == dst.is_final, (src, dst)
                assert fetch(conn, n).status == dst.value  # type: ignore[union-attr]
            else:
                with pytest.raises(IllegalTransition, match=f"from {src.value} to {dst.value}"):
                    transition(conn, n, to=dst, expect_from=src)
                assert snapshot(conn, n) == before, (src, dst)


def test_an_allowed_transition_of_a_task_in_another_status_matches_nothing(db: Database) -> None:
    """The compare-and-set: the change was decided in `src`, but the task has moved on meanwhile."""
    with db.transaction() as conn:
        for src, dsts in ALLOWED.items():
            for actual in (s for s in STATUSES if s != src):
                n = new_task(conn, actual)
                before = snapshot(conn, n)
                for dst in dsts:
                    assert transition(conn, n, to=dst, expect_from=src) is None, (src, actual, dst)
                assert snapshot(conn, n) == before


def test_a_guard_column_that_differs_refuses_the_change(db: Database) -> None:
    with db.transaction() as conn:
        n = new_task(conn, TaskStatus.running)
        conn.execute(text("UPDATE tasks SET task_token = 'current' WHERE id = :n"), {"n": n})
        stale = {"task_token": "stale"}
        assert transition(conn, n, to=TaskStatus.success, expect_from=TaskStatus.running, match=stale) is None
        current = {"task_token": "current"}
        row = transition(conn, n, to=TaskStatus.success, expect_from=TaskStatus.running, match=current)
        assert row is not None and row.status == "success"


def test_a_refused_pair_among_several_expected_statuses_is_refused_whole(db: Database) -> None:
    with db.transaction() as conn:
        n = new_task(conn, TaskStatus.running)
        before = snapshot(conn, n)
        with pytest.raises(IllegalTransition):
            transition(conn, n, to=TaskStatus.failed, expect_from=[TaskStatus.running, TaskStatus.success])
        assert snapshot(conn, n) == before


def _status_writers(path: Path) -> list[int]:
    """Lines of `path` that call `.values(...)` with a `status` column."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            keys: list[Any] = [k.arg for k in node.keywords]
            dicts = [a for a in node.args if isinstance(a, ast.Dict)]
            keys += [k.value for d in dicts for k in d.keys if isinstance(k, ast.Constant)]
            if "status" in keys:
                found.append(node.lineno)
    return found


def test_only_the_transitions_module_writes_a_status() -> None:
    root = Path(cloud.__file__).parent
    writers = {
        str(p.relative_to(root)): lines
        for p in root.rglob("*.py")
        if "migrations" not in p.parts and (lines := _status_writers(p))
    }
    assert writers == {"services/transitions.py": writers.get("services/transitions.py", [])}
    assert writers["services/transitions.py"]
