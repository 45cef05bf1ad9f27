"""cloud.db.prepared.Prepared: rows come back converted by the columns' types, run after run, on SQLite and
PostgreSQL; a numeric column (whose conversion depends on the type the server sent) too."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Float, Numeric, bindparam, cast, select

from cloud.db.engine import Database
from cloud.db.prepared import Prepared
from cloud.services.tasks import fetch
from tests.unit.cloud.factory import queue_shell

AMOUNTS = Prepared(
    select(
        cast(bindparam("b_x", type_=Numeric(10, 2)), Numeric(10, 2)).label("exact"),
        cast(bindparam("b_y", type_=Float()), Float()).label("approx"),
    )
)


def test_numeric_columns_are_converted_by_the_type_the_server_sent_at_every_run(db: Database) -> None:
    with db.reading() as conn:
        runs = [row for x in ("1.50", "2.25") for row in AMOUNTS.rows(conn, {"b_x": Decimal(x), "b_y": 0.5})]
    assert [(r.exact, r.approx) for r in runs] == [(Decimal("1.50"), 0.5), (Decimal("2.25"), 0.5)]
    assert all(isinstance(r.exact, Decimal) and isinstance(r.approx, float) for r in runs)


def test_a_task_row_reads_the_same_on_its_first_run_and_later_ones(db: Database) -> None:
    """The row type is made from the first run's description and kept: later rows convert alike."""
    queue_shell(db)
    queue_shell(db, params={"nested": {"a": [1, 2]}})
    with db.reading() as conn:
        first, second = fetch(conn, 1), fetch(conn, 2)
    assert first is not None and second is not None
    assert (first.id, first.type, first.params) == (1, "shell", {})
    assert (second.id, second.params, second.created_at.tzinfo is not None) == (2, {"nested": {"a": [1, 2]}}, True)
