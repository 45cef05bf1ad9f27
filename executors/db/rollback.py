"""Before-images and rollback SQL for MySQL and PostgreSQL (`exec_options.backup`, on by default).

For UPDATE and DELETE the affected rows are read first (the statement's own WHERE, ORDER BY and LIMIT,
`FOR UPDATE`, in the same transaction) and restored by primary key; INSERT is undone by deleting the
inserted keys; CREATE TABLE by dropping the table. Anything else is reported as not reversible, with
the reason, rather than guessed at.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

from executors.db.split import Statement

MAX_BACKUP_ROWS = 100_000
"""A statement touching more rows than this runs without rollback SQL (the note says why)."""


@dataclass
class Executed:
    """What running one statement gave: row count, result rows, and MySQL's first auto-increment id."""

    rowcount: int
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    truncated: bool = False
    lastrowid: int | None = None


class BackupDb(ABC):
    """What the planner needs from a session: run SQL, read the catalog, write literals."""

    dialect: str

    @abstractmethod
    def run(self, sql: str, max_rows: int) -> Executed:
        """Run one statement in the open transaction."""

    @abstractmethod
    def primary_key(self, table: exp.Table) -> list[str]:
        """The table's primary-key columns in key order; empty when it has none."""

    @abstractmethod
    def columns(self, table: exp.Table) -> list[str]:
        """The table's columns in their declared order."""

    @abstractmethod
    def exists(self, table: exp.Table) -> bool:
        """Whether the table exists now."""

    @abstractmethod
    def literal(self, value: Any) -> str:
        """`value` as a SQL literal, quoted by the driver."""

    def auto_increment_id(self, table: exp.Table, pk: list[str], first_id: int | None, count: int) -> list[Any] | None:
        """Keys of rows a multi-row INSERT just added, when the server can tell (MySQL); else None."""
        return None

    def returning(self, stmt_sql: str, pk: list[str]) -> str | None:
        """The INSERT rewritten to return the inserted keys (PostgreSQL); None where unsupported."""
        return None

    def quote(self, name: str) -> str:
        return exp.to_identifier(name, quoted=True).sql(dialect=self.dialect)


@dataclass
class Backed:
    """A statement's outcome with its rollback SQL (or the reason there is none)."""

    executed: Executed
    rollback_sql: list[str]
    note: str = ""


def run_with_backup(db: BackupDb, stmt: Statement, max_rows: int) -> Backed:
    """Run `stmt` on `db`, recording what is needed to undo it."""
    if stmt.kind == "query" or stmt.kind == "other":
        return Backed(db.run(stmt.sql, max_rows), [])
    try:
        tree = sqlglot.parse_one(stmt.sql, read=db.dialect)
    except sqlglot.errors.SqlglotError:
        return Backed(db.run(stmt.sql, max_rows), [], f"not reversible: {stmt.verb} could not be parsed for backup")
    if isinstance(tree, (exp.Update, exp.Delete)):
        return _update_or_delete(db, stmt, tree, max_rows)
    if isinstance(tree, exp.Insert):
        return _insert(db, stmt, tree, max_rows)
    if isinstance(tree, exp.Create) and (tree.kind or "").upper() == "TABLE":
        table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        existed = bool(tree.args.get("exists")) and db.exists(table)
        done = db.run(stmt.sql, max_rows)
        if existed:
            return Backed(done, [], "nothing to roll back: the table already existed")
        return Backed(done, [f"DROP TABLE IF EXISTS {_name(db, table)}"])
    return Backed(db.run(stmt.sql, max_rows), [], f"not reversible: {stmt.verb}")


def _update_or_delete(db: BackupDb, stmt: Statement, tree: exp.Update | exp.Delete, max_rows: int) -> Backed:
    table = tree.this
    if (
        not isinstance(table, exp.Table)
        or table.args.get("joins")
        or tree.args.get("from_")
        or tree.args.get("from")
        or tree.args.get("using")
        or tree.args.get("tables")
    ):
        return Backed(db.run(stmt.sql, max_rows), [], f"not reversible: {stmt.verb} over several tables")
    pk = db.primary_key(table)
    if not pk:
        return Backed(db.run(stmt.sql, max_rows), [], f"not reversible: {_name(db, table)} has no primary key")
    set_cols: list[str] = []
    if isinstance(tree, exp.Update):
        set_cols = [eq.this.name for eq in tree.expressions if isinstance(eq, exp.EQ)]
        if set(set_cols) & set(pk):
            return Backed(db.run(stmt.sql, max_rows), [], "not reversible: the statement changes the primary key")
    select = exp.select("*").from_(table.copy())
    if tree.args.get("where") is not None:
        select = select.where(tree.args["where"].this.copy())
    for part in ("order", "limit"):
        if tree.args.get(part) is not None:
            select.set(part, tree.args[part].copy())
    before = db.run(select.sql(dialect=db.dialect) + " FOR UPDATE", MAX_BACKUP_ROWS)
    done = db.run(stmt.sql, max_rows)
    if before.truncated:
        return Backed(done, [], f"not backed up: more than {MAX_BACKUP_ROWS} rows affected")
    cols = before.columns or []
    name = _name(db, table)
    out = []
    for row in before.rows or []:
        values = dict(zip(cols, row, strict=False))
        where = " AND ".join(f"{db.quote(k)} = {db.literal(values[k])}" for k in pk)
        if isinstance(tree, exp.Update):
            assigns = ", ".join(f"{db.quote(c)} = {db.literal(values[c])}" for c in set_cols if c in values)
            out.append(f"UPDATE {name} SET {assigns} WHERE {where};")
        else:
            names = ", ".join(db.quote(c) for c in cols)
            out.append(f"INSERT INTO {name} ({names}) VALUES ({', '.join(db.literal(values[c]) for c in cols)});")
    return Backed(done, out)


def _insert(db: BackupDb, stmt: Statement, tree: exp.Insert, max_rows: int) -> Backed:
    target = tree.this
    table = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table, exp.Table) or stmt.verb != "INSERT":
        return Backed(db.run(stmt.sql, max_rows), [], f"not reversible: {stmt.verb}")
    if tree.args.get("conflict") is not None or tree.args.get("ignore") or tree.args.get("overwrite"):
        return Backed(db.run(stmt.sql, max_rows), [], "not reversible: the INSERT may update existing rows")
    pk = db.primary_key(table)
    if not pk:
        return Backed(db.run(stmt.sql, max_rows), [], f"not reversible: {_name(db, table)} has no primary key")
    keys = _literal_keys(db, tree, table, pk)
    rewritten = db.returning(stmt.sql, pk) if keys is None and tree.args.get("returning") is None else None
    if rewritten is not None:
        done = db.run(rewritten, MAX_BACKUP_ROWS)
        keys = [list(r) for r in done.rows or []]
        done = Executed(done.rowcount)
    else:
        done = db.run(stmt.sql, max_rows)
        if keys is None:
            found = db.auto_increment_id(table, pk, done.lastrowid, done.rowcount)
            keys = [[k] for k in found] if found is not None else None
    if keys is None:
        return Backed(done, [], "not reversible: cannot tell which keys the INSERT created")
    name = _name(db, table)
    out = [
        f"DELETE FROM {name} WHERE "
        + " AND ".join(f"{db.quote(c)} = {db.literal(v)}" for c, v in zip(pk, key, strict=True))
        + ";"
        for key in keys
    ]
    return Backed(done, out)


def _literal_keys(db: BackupDb, tree: exp.Insert, table: exp.Table, pk: list[str]) -> list[list[Any]] | None:
    """The primary keys an `INSERT ... VALUES` spells out as literals; None when it does not."""
    values = tree.expression
    if not isinstance(values, exp.Values):
        return None
    names = [c.name for c in tree.this.expressions] if isinstance(tree.this, exp.Schema) else db.columns(table)
    if not set(pk) <= set(names):
        return None
    keys = []
    for row in values.expressions:
        items = row.expressions if isinstance(row, exp.Tuple) else [row]
        if len(items) != len(names):
            return None
        key = []
        for col in pk:
            value = _python_literal(items[names.index(col)])
            if value is _NOT_LITERAL:
                return None
            key.append(value)
        keys.append(key)
    return keys


_NOT_LITERAL = object()


def _python_literal(node: exp.Expression) -> Any:
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        return int(text) if text.lstrip("-").isdigit() else float(text)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        inner = _python_literal(node.this)
        return -inner if inner is not _NOT_LITERAL else _NOT_LITERAL
    return _NOT_LITERAL


def _name(db: BackupDb, table: exp.Table) -> str:
    parts = [p for p in (table.catalog, table.db, table.name) if p]
    return ".".join(db.quote(p) for p in parts)
