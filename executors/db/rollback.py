"""Before-images and rollback SQL for MySQL and PostgreSQL (`exec_options.backup`, on by default).

For UPDATE and DELETE the affected rows are read first (the statement's own WITH, WHERE, ORDER BY and
LIMIT, `FOR UPDATE`, in the same transaction, every column by name) and restored by primary key, exactly:
generated columns are left to recompute, PostgreSQL's `GENERATED ALWAYS` identities are re-inserted with
`OVERRIDING SYSTEM VALUE`, MySQL's `ON UPDATE` columns are set back explicitly. Where that cannot be
exact the note says `cannot restore exactly: <why>` and there is no script. INSERT is undone by deleting
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


@dataclass(frozen=True)
class Column:
    """What writing a before-image back needs to know about one column."""

    name: str
    type: str = ""
    """The column's type as the catalog spells it (PostgreSQL: `format_type`, MySQL: `DATA_TYPE`)."""
    generated: bool = False
    """Computed by the server (generated/stored/virtual): never written, it recomputes."""
    identity_always: bool = False
    """PostgreSQL `GENERATED ALWAYS AS IDENTITY`: an INSERT needs `OVERRIDING SYSTEM VALUE`, an UPDATE cannot set it."""
    on_update: bool = False
    """MySQL `ON UPDATE CURRENT_TIMESTAMP`: a restoring UPDATE sets it, or the server stamps it with now."""
    invisible: bool = False
    """MariaDB/MySQL `INVISIBLE`: left out of `SELECT *` and of an INSERT without a column list."""
    auto_increment: bool = False
    """MySQL `AUTO_INCREMENT`: an inserted 0 means "generate one" (unless sql_mode says otherwise)."""


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
        """The table's columns in their declared order (invisible ones too)."""

    def column_info(self, table: exp.Table) -> list[Column]:
        """The table's columns with what restoring them needs; read afresh (an ALTER may have run since)."""
        return [Column(c) for c in self.columns(table)]

    @abstractmethod
    def exists(self, table: exp.Table) -> bool:
        """Whether the table exists now."""

    @abstractmethod
    def literal(self, value: Any) -> str:
        """`value` as a SQL literal, quoted by the driver."""

    def image_columns(self, columns: list[Column]) -> list[exp.Expression]:
        """The select list of a before-image read: every column by name (`*` leaves out invisible ones),
        each aliased to its own name and read so that `restore_literal` writes back the same value."""
        return [exp.column(c.name, quoted=True) for c in columns]

    def restore_literal(self, column: Column, value: Any) -> str:
        """A before-image value written back into `column`."""
        return self.literal(value)

    def inexact_read(self, columns: list[Column]) -> str | None:
        """Why this session cannot read these columns' values exactly (a setting); None when it can."""
        return None

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
        return _cannot_restore(db, stmt, max_rows, f"{_name(db, table)} has no primary key")
    info = db.column_info(table)
    columns = [c.name for c in info]
    set_cols = _set_columns(db, tree, columns) if isinstance(tree, exp.Update) else []
    if set(set_cols) & set(pk):
        raise NotReversible("the statement changes the primary key")
    fixed = [c.name for c in info if c.identity_always and c.name in set_cols]
    if fixed:
        return _cannot_restore(db, stmt, max_rows, f"an UPDATE cannot set the GENERATED ALWAYS identity {fixed[0]!r}")
    why = db.inexact_read(info)
    if why:
        return _cannot_restore(db, stmt, max_rows, why)
    select = exp.select(*db.image_columns(info)).from_(table.copy())
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
    rows = [dict(zip(before.columns or [], row, strict=True)) for row in before.rows or []]
    try:
        if isinstance(tree, exp.Update):
            out = _restore_updates(db, table, pk, info, set_cols, rows)
        else:
            out = _restore_deletes(db, table, info, rows)
    except _Inexact as why:
        return Backed(done, [], f"cannot restore exactly: {why}")
    note = ""
    if done.rowcount != len(rows):
        # Another transaction changed which rows match between the read and the statement.
        note = f"the statement changed {done.rowcount} rows but {len(rows)} were read first: check it"
    return Backed(done, out, note)


class _Inexact(Exception):
    """Why the rows read cannot be written back exactly."""


def _cannot_restore(db: BackupDb, stmt: Statement, max_rows: int, why: str) -> Backed:
    """Run the statement and say why there is no rollback SQL, rather than writing an inexact one."""
    return Backed(db.run(stmt.sql, max_rows), [], f"cannot restore exactly: {why}")


def _where_key(db: BackupDb, pk: list[Column], row: dict[str, Any]) -> str:
    return " AND ".join(f"{db.quote(c.name)} = {db.restore_literal(c, row[c.name])}" for c in pk)


def _by_name(info: list[Column], names: list[str]) -> list[Column]:
    named = {c.name: c for c in info}
    return [named[n] for n in names]


def _restore_updates(
    db: BackupDb, table: exp.Table, pk: list[str], info: list[Column], set_cols: list[str], rows: list[dict[str, Any]]
) -> list[str]:
    """One UPDATE per row setting back what the statement set, and every `ON UPDATE` column the server
    restamped; generated columns are left to recompute."""
    wanted = set(set_cols)
    assigned = [c for c in info if not c.generated and c.name not in pk and (c.name in wanted or c.on_update)]
    if not assigned:  # only generated columns were set: they recompute by themselves
        return []
    keys, name = _by_name(info, pk), _name(db, table)
    out = []
    for row in rows:
        assigns = ", ".join(f"{db.quote(c.name)} = {db.restore_literal(c, row[c.name])}" for c in assigned)
        out.append(f"UPDATE {name} SET {assigns} WHERE {_where_key(db, keys, row)};")
    return out


def _restore_deletes(db: BackupDb, table: exp.Table, info: list[Column], rows: list[dict[str, Any]]) -> list[str]:
    """One INSERT per row with every written column, invisible ones too; generated columns recompute."""
    written = [c for c in info if not c.generated]
    for c in written:
        if c.auto_increment and any(row[c.name] == 0 for row in rows):
            raise _Inexact(f"{c.name!r} is 0 in an AUTO_INCREMENT column: inserting it generates a new value")
    overriding = " OVERRIDING SYSTEM VALUE" if any(c.identity_always for c in written) else ""
    names = ", ".join(db.quote(c.name) for c in written)
    into = f"INSERT INTO {_name(db, table)} ({names}){overriding} VALUES"
    return [f"{into} ({', '.join(db.restore_literal(c, row[c.name]) for c in written)});" for row in rows]


def _insert(db: BackupDb, stmt: Statement, tree: exp.Insert, max_rows: int) -> Backed:
    target = tree.this
    table = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table, exp.Table) or stmt.verb != "INSERT":
        raise NotReversible(stmt.verb)
    if tree.args.get("conflict") is not None or tree.args.get("ignore") or tree.args.get("overwrite"):
        raise NotReversible("the INSERT may update existing rows")
    pk = db.primary_key(table)
    if not pk:
        return _cannot_restore(db, stmt, max_rows, f"{_name(db, table)} has no primary key")
    keys = _literal_keys(db, tree, table, pk)
    rewritten = db.returning(stmt.sql, pk) if keys is None and tree.args.get("returning") is None else None
    if rewritten is not None:
        got = db.run(rewritten, MAX_BACKUP_ROWS)
        if got.truncated:
            return Backed(Executed(got.rowcount), [], f"not backed up: more than {MAX_BACKUP_ROWS} rows inserted")
        done, typed = Executed(got.rowcount), [list(r) for r in got.rows or []]
        named = {c.name: c for c in db.column_info(table)}
        literal = lambda c, v: db.restore_literal(named[c], v)  # noqa: E731
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
    info = db.column_info(table)
    if isinstance(tree.this, exp.Schema):
        columns = [c.name for c in info]
        names = [
            _catalog_name(db, c if isinstance(c, exp.Identifier) else c.this, columns) for c in tree.this.expressions
        ]
    else:  # an INSERT without a column list fills the visible columns only
        names = [c.name for c in info if not c.invisible]
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
