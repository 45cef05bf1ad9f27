"""Before-images and rollback SQL for MySQL and PostgreSQL (`exec_options.backup`, on by default).

For UPDATE and DELETE the affected rows are read first (the statement's own WITH, WHERE, ORDER BY and
LIMIT, `FOR UPDATE`, in the same transaction) and restored by primary key; INSERT is undone by deleting
the inserted keys; CREATE TABLE by dropping the table. Anything else is reported as not reversible, with
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
_ROUTINE_CALLS = {"CALL", "DO", "EXECUTE", "EXEC"}


@dataclass
class Executed:
    """What running one statement gave: row count, result rows, and MySQL's first auto-increment id."""

    rowcount: int
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    truncated: bool = False
    lastrowid: int | None = None


class NotReversible(Exception):
    """Why no rollback SQL can be written for a statement."""


class BackupDb(ABC):
    """What the planner needs from a session: run SQL, read the catalog, write literals."""

    dialect: str

    @abstractmethod
    def run(self, sql: str, max_rows: int, rows: bool = False) -> Executed:
        """Run one statement in the open transaction (`rows`: it is a query, stream its rows)."""

    def try_run(self, sql: str, max_rows: int) -> Executed | Exception:
        """Run a read that may fail without spoiling the transaction (PostgreSQL uses a savepoint)."""
        try:
            return self.run(sql, max_rows, rows=True)
        except Exception as exc:
            return exc

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

    def image_columns(self, table: exp.Table, columns: list[str]) -> list[exp.Expression]:
        """The select list of a before-image read."""
        return [exp.Star()]

    def restore_literal(self, table: exp.Table, column: str, value: Any) -> str:
        """A before-image value written back into `column`."""
        return self.literal(value)

    def auto_increment(self, table: exp.Table) -> str | None:
        """The table's auto-increment column (MySQL), if any."""
        return None

    def inserted_ids(self, first_id: int | None, count: int) -> list[int] | None:
        """Ids a multi-row INSERT got from the auto-increment column (MySQL); None where unknown."""
        return None

    def returning(self, stmt_sql: str, pk: list[str]) -> str | None:
        """The INSERT rewritten to return the inserted keys (PostgreSQL); None where unsupported."""
        return None

    def fold(self, ident: exp.Identifier) -> str:
        """The catalog name an identifier refers to (PostgreSQL folds unquoted names to lower case)."""
        return str(ident.this)

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
    if stmt.kind == "query":
        return Backed(db.run(stmt.sql, max_rows, rows=True), [])
    if stmt.kind == "other":
        note = f"not reversible: {stmt.verb}" if stmt.verb in _ROUTINE_CALLS else ""
        return Backed(db.run(stmt.sql, max_rows), [], note)
    try:
        tree = sqlglot.parse_one(stmt.sql, read=db.dialect)
    except sqlglot.errors.SqlglotError:
        tree = None
    try:
        if isinstance(tree, (exp.Update, exp.Delete)):
            return _update_or_delete(db, stmt, tree, max_rows)
        if isinstance(tree, exp.Insert):
            return _insert(db, stmt, tree, max_rows)
        if isinstance(tree, exp.Create) and (tree.kind or "").upper() == "TABLE":
            return _create_table(db, stmt, tree, max_rows)
        raise NotReversible(stmt.verb if tree is not None else f"{stmt.verb} could not be parsed for backup")
    except _AfterRun as why:  # the statement already ran: never run it twice
        return Backed(why.done, [], f"not reversible: {why}")
    except NotReversible as why:
        return Backed(db.run(stmt.sql, max_rows), [], f"not reversible: {why}")


def _create_table(db: BackupDb, stmt: Statement, tree: exp.Create, max_rows: int) -> Backed:
    table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    if tree.find(exp.TemporaryProperty) is not None:
        return Backed(db.run(stmt.sql, max_rows), [], "nothing to roll back: a temporary table")
    existed = bool(tree.args.get("exists")) and db.exists(table)
    done = db.run(stmt.sql, max_rows)
    if existed:
        return Backed(done, [], "nothing to roll back: the table already existed")
    return Backed(done, [f"DROP TABLE IF EXISTS {_name(db, table)};"])


def _single_table(tree: exp.Expression, verb: str) -> exp.Table:
    table = tree.this
    several = any(tree.args.get(k) for k in ("from", "from_", "using", "tables"))
    if not isinstance(table, exp.Table) or table.args.get("joins") or several:
        raise NotReversible(f"{verb} over several tables")
    return table


def _set_columns(db: BackupDb, tree: exp.Update, columns: list[str]) -> list[str]:
    """The catalog names of the columns an UPDATE assigns; NotReversible for anything but plain columns."""
    out = []
    for item in tree.expressions:
        target = item.this if isinstance(item, exp.EQ) else None
        if not isinstance(target, exp.Column) or not isinstance(target.this, exp.Identifier):
            raise NotReversible(f"SET {item.sql(dialect=db.dialect)[:60]} does not assign a plain column")
        out.append(_catalog_name(db, target.this, columns))
    return out


def _catalog_name(db: BackupDb, ident: exp.Identifier, columns: list[str]) -> str:
    name = db.fold(ident)
    if name in columns:
        return name
    if db.dialect != "postgres":  # MySQL column names are case-insensitive
        for c in columns:
            if c.lower() == name.lower():
                return c
    raise NotReversible(f"column {name!r} is not in the table")


def _update_or_delete(db: BackupDb, stmt: Statement, tree: exp.Update | exp.Delete, max_rows: int) -> Backed:
    table = _single_table(tree, stmt.verb)
    pk = db.primary_key(table)
    if not pk:
        raise NotReversible(f"{_name(db, table)} has no primary key")
    columns = db.columns(table)
    set_cols = _set_columns(db, tree, columns) if isinstance(tree, exp.Update) else []
    if set(set_cols) & set(pk):
        raise NotReversible("the statement changes the primary key")
    select = exp.select(*db.image_columns(table, columns)).from_(table.copy())
    if tree.args.get("where") is not None:
        select = select.where(tree.args["where"].this.copy())
    for part in ("order", "limit", "with", "with_"):
        if tree.args.get(part) is not None:
            select.set(part, tree.args[part].copy())
    before = db.try_run(select.sql(dialect=db.dialect) + " FOR UPDATE", MAX_BACKUP_ROWS)
    if isinstance(before, Exception):
        raise NotReversible(f"the rows could not be read first ({' '.join(str(before).split())[:200]})")
    done = db.run(stmt.sql, max_rows)
    if before.truncated:
        return Backed(done, [], f"not backed up: more than {MAX_BACKUP_ROWS} rows affected")
    image_cols = before.columns or []
    name = _name(db, table)
    out = []
    for row in before.rows or []:
        values = dict(zip(image_cols, row, strict=False))
        lit = lambda c, values=values: db.restore_literal(table, c, values[c])  # noqa: E731
        where = " AND ".join(f"{db.quote(k)} = {lit(k)}" for k in pk)
        if isinstance(tree, exp.Update):
            assigns = ", ".join(f"{db.quote(c)} = {lit(c)}" for c in dict.fromkeys(set_cols))
            out.append(f"UPDATE {name} SET {assigns} WHERE {where};")
        else:
            names = ", ".join(db.quote(c) for c in image_cols)
            out.append(f"INSERT INTO {name} ({names}) VALUES ({', '.join(lit(c) for c in image_cols)});")
    note = ""
    if done.rowcount != len(before.rows or []):
        # Another transaction changed which rows match between the read and the statement.
        note = f"the statement changed {done.rowcount} rows but {len(before.rows or [])} were read first: check it"
    return Backed(done, out, note)


def _insert(db: BackupDb, stmt: Statement, tree: exp.Insert, max_rows: int) -> Backed:
    target = tree.this
    table = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table, exp.Table) or stmt.verb != "INSERT":
        raise NotReversible(stmt.verb)
    if tree.args.get("conflict") is not None or tree.args.get("ignore") or tree.args.get("overwrite"):
        raise NotReversible("the INSERT may update existing rows")
    pk = db.primary_key(table)
    if not pk:
        raise NotReversible(f"{_name(db, table)} has no primary key")
    keys = _literal_keys(db, tree, table, pk)
    rewritten = db.returning(stmt.sql, pk) if keys is None and tree.args.get("returning") is None else None
    if rewritten is not None:
        got = db.run(rewritten, MAX_BACKUP_ROWS)
        if got.truncated:
            return Backed(Executed(got.rowcount), [], f"not backed up: more than {MAX_BACKUP_ROWS} rows inserted")
        done, typed = Executed(got.rowcount), [list(r) for r in got.rows or []]
        literal = lambda c, v: db.restore_literal(table, c, v)  # noqa: E731
    else:
        done = db.run(stmt.sql, max_rows)
        if keys is None:
            ids = db.inserted_ids(done.lastrowid, done.rowcount) if len(pk) == 1 and db.auto_increment(table) else None
            if ids is None:
                raise _AfterRun(done, "cannot tell which keys the INSERT created")
            keys = [[i] for i in ids]
        typed = keys
        literal = lambda c, v: db.literal(v)  # noqa: E731
    name = _name(db, table)
    out = [
        f"DELETE FROM {name} WHERE "
        + " AND ".join(f"{db.quote(c)} = {literal(c, v)}" for c, v in zip(pk, key, strict=True))
        + ";"
        for key in typed
    ]
    return Backed(done, out)


class _AfterRun(NotReversible):
    """Not reversible, found out only after the statement ran (its outcome must not be run again)."""

    def __init__(self, done: Executed, why: str) -> None:
        super().__init__(why)
        self.done = done


def _literal_keys(db: BackupDb, tree: exp.Insert, table: exp.Table, pk: list[str]) -> list[list[Any]] | None:
    """The primary keys an `INSERT ... VALUES` spells out as literals; None when it gives none at all.

    A NULL or 0 for an auto-increment key means "generate one", so such rows make it not reversible.
    """
    values = tree.expression
    if not isinstance(values, exp.Values):
        return None
    columns = db.columns(table)
    if isinstance(tree.this, exp.Schema):
        names = [
            _catalog_name(db, c if isinstance(c, exp.Identifier) else c.this, columns) for c in tree.this.expressions
        ]
    else:
        names = columns
    if not set(pk) <= set(names):
        return None
    auto = db.auto_increment(table)
    keys = []
    for row in values.expressions:
        items = row.expressions if isinstance(row, exp.Tuple) else [row]
        if len(items) != len(names):
            raise NotReversible("the VALUES rows do not match the column list")
        key = []
        for col in pk:
            value = _python_literal(items[names.index(col)])
            if value is _NOT_LITERAL or (col == auto and value in (None, 0)):
                raise NotReversible(f"the key {col!r} is not spelled out in every row")
            key.append(value)
        keys.append(key)
    return keys


_NOT_LITERAL = object()


def _python_literal(node: exp.Expression) -> Any:
    if isinstance(node, exp.Null):
        return None
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
    parts = [p for p in (table.args.get("catalog"), table.args.get("db"), table.args.get("this")) if p]
    return ".".join(db.quote(db.fold(p)) if isinstance(p, exp.Identifier) else str(p) for p in parts)
