"""Statements of the per-task path run on the driver's cursor: compiled once per dialect by SQLAlchemy, then
executed without its per-call machinery.

A task's round trip runs a handful of statements (create, claim, result). SQLAlchemy's execution of a
cached statement still builds an execution context, processes every parameter and wraps every row, which
cost about three times the SQL itself on SQLite (docs/performance.md, issue 18). A `Prepared` statement
keeps what SQLAlchemy compiled (the SQL text, the parameters' order, the columns' own type conversions)
and runs it on the same connection, in the same transaction, with the driver's errors raised as
SQLAlchemy's (IntegrityError, OperationalError) so callers catch one kind.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Numeric, Table, bindparam, exc, insert, literal
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

Processor = Callable[[Any], Any] | None


@contextmanager
def driver_errors(dialect: Dialect, sql: str) -> Iterator[None]:
    """The driver's errors of SQL run on its own cursor, raised as SQLAlchemy's (OperationalError,
    IntegrityError, ...), as SQLAlchemy's own execution raises them: callers and the API's error handlers
    (a database away is a 503) catch one kind. Parameters never go into the error: they may be secrets."""
    try:
        yield
    except dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(
            sql, None, error, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
        ) from error


@dataclass(frozen=True)
class _Plan:
    """One statement as compiled for one dialect."""

    sql: str
    names: tuple[str, ...]
    """The parameters in the order the SQL takes them (positional drivers) or their names (named ones)."""
    positional: bool
    fixed: Mapping[str, Any]
    """Values the statement itself holds (literals SQLAlchemy turned into parameters), already converted."""
    convert: Mapping[str, Callable[[Any], Any]]
    """The caller's parameters that need the column type's conversion (JSON, datetimes, booleans)."""
    returns: bool


class Prepared:
    """A Core statement run on the driver's cursor of a SQLAlchemy Connection; the rows of its RETURNING or
    SELECT come back as named tuples (fields read as attributes, like SQLAlchemy's rows), converted by the
    columns' types as SQLAlchemy would.

    Only plain statements: no `IN` lists (expanded at each execution), no parameter a Python function fills.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan] = {}
        self._rows: dict[tuple[str, tuple[Any, ...]], tuple[type[tuple[Any, ...]], list[Processor]]] = {}
        """The named tuple of the statement's rows and the columns' result conversions, by dialect (and by the
        server's type codes where they matter). Made from the first run's description: a statement's result
        columns do not change, and reading the description at every run cost a Column object per column
        (psycopg)."""
        self._by_type_code = any(isinstance(c.type, Numeric) for c in self._columns().values())
        """A numeric column's conversion depends on the type the server sent (PostgreSQL): such a statement
        reads the description at every run and keys its row type by the type codes."""

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run the statement with `params` (by bind name); every row it returns."""
        return self._run(conn, params, fetch=True)[1]

    def _run(self, conn: Connection, params: Mapping[str, Any], fetch: bool) -> tuple[int, list[Any]]:
        dialect = conn.dialect
        plan = self._plans.get(dialect.name) or self._plan(dialect)
        values = dict(plan.fixed)
        convert = plan.convert
        for name, value in params.items():
            fn = convert.get(name)
            values[name] = value if fn is None or value is None else fn(value)
        args: Sequence[Any] | Mapping[str, Any] = [values[n] for n in plan.names] if plan.positional else values
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        # Listeners of SQLAlchemy's cursor events (tracing, a test's interleaving) still see the statement.
        dispatch = conn.dispatch
        try:
            with driver_errors(dialect, plan.sql):
                if dispatch.before_cursor_execute:
                    dispatch.before_cursor_execute(conn, cursor, plan.sql, args, None, False)
                cursor.execute(plan.sql, args)
                if dispatch.after_cursor_execute:
                    dispatch.after_cursor_execute(conn, cursor, plan.sql, args, None, False)
                if not (fetch and plan.returns):
                    return cursor.rowcount, []
                fetched = cursor.fetchall()
                found = None if self._by_type_code else self._rows.get((dialect.name, ()))
                found = found or self._row_type(dialect, cursor.description)
        finally:
            cursor.close()
        row_type, processors = found
        make = row_type._make  # type: ignore[attr-defined]
        if not any(processors):
            return len(fetched), [make(r) for r in fetched]

        def converted(row: Sequence[Any]) -> list[Any]:
            return [v if p is None or v is None else p(v) for p, v in zip(processors, row, strict=True)]

        return len(fetched), [make(converted(r)) for r in fetched]

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        return self._run(conn, params, fetch=False)[0]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any | None:
        """The statement's first row, or None."""
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def _plan(self, dialect: Dialect) -> _Plan:
        compiled = self.statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        if compiled.positional:
            assert compiled.positiontup is not None
            names: tuple[str, ...] = tuple(compiled.positiontup)
        else:
            names = tuple(by_name)
        fixed, convert = {}, {}
        for name, bind in by_name.items():
            if bind.expanding or bind.callable is not None:
                raise ValueError(f"Prepared: parameter {name!r} is expanded or computed at execution")
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:
                fixed[name] = bind.value if process is None or bind.value is None else process(bind.value)
            elif process is not None:
                convert[name] = process
        returns = bool(self._columns())  # a SELECT's, or an INSERT/UPDATE's RETURNING
        plan = _Plan(compiled.string, names, bool(compiled.positional), fixed, convert, returns)
        self._plans[dialect.name] = plan
        return plan

    def _row_type(self, dialect: Dialect, description: Sequence[Any]) -> tuple[type[tuple[Any, ...]], list[Processor]]:
        """The named tuple and the columns' result conversions, for the driver's description of the rows
        (a PostgreSQL numeric column's conversion depends on the type the server sent), kept."""
        codes = tuple(d[1] for d in description) if self._by_type_code else ()
        found = self._rows.get((dialect.name, codes))
        if found is not None:
            return found
        columns = self._columns()
        names = [d[0] for d in description]
        processors: list[Processor] = []
        for name, d in zip(names, description, strict=True):
            column = columns.get(name)
            if column is None:
                processors.append(None)
                continue
            processors.append(column.type.dialect_impl(dialect).result_processor(dialect, d[1]))
        row_type = namedtuple("Row", names)  # type: ignore[misc]
        self._rows[dialect.name, codes] = (row_type, processors)
        return row_type, processors

    def _columns(self) -> dict[str, Any]:
        """The statement's result columns by name (RETURNING's or SELECT's)."""
        statement: Any = self.statement
        return {c.name: c for c in getattr(statement, "exported_columns", ())}


@lru_cache(maxsize=64)
def inserting(table: Table, keys: frozenset[str], returning: bool = True) -> Prepared:
    """INSERT INTO `table` the columns `keys` (parameters by column name), RETURNING the whole row unless
    told not to. A column left out gets its scalar default, as SQLAlchemy's own insert would give it; one
    whose default is a function must be given."""
    values: dict[str, Any] = {}
    for column in table.c:
        if column.name in keys:
            values[column.name] = bindparam(column.name, type_=column.type)
        elif column.default is not None:
            if not column.default.is_scalar:
                raise ValueError(f"inserting: give {table.name}.{column.name} (its default is computed)")
            values[column.name] = literal(column.default.arg, column.type)  # type: ignore[attr-defined]
    statement = insert(table).values(values)
    return Prepared(statement.returning(*table.c) if returning else statement)
