"""Checking a whole SQL script before any of it runs: dangerous statements and transaction statements.

Both checks need no I/O, so the cloud runs them on an inline `command` (a 400 at POST) and the agent on
a file's script before it connects. Dangerous (refused unless `exec_options.allow_dangerous`): UPDATE or
DELETE without a WHERE (or with one that is always true, like `WHERE 1=1`), any DROP, TRUNCATE.
Transaction statements: `BEGIN`/`START TRANSACTION` (with their modes) open a block that runs as one
transaction, `COMMIT`/`END` close it, `ROLLBACK`/`ABORT` close it undoing it; savepoints, `SET
AUTOCOMMIT`, a nested BEGIN and a ROLLBACK outside a block are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from executors.db.split import Statement

TRANSACTIONAL = {"mysql", "postgres"}
"""Dialects whose sessions run batches in transactions; doris and clickhouse commit each statement."""
BEGIN_VERBS = {"BEGIN", "START TRANSACTION"}
COMMIT_VERBS = {"COMMIT", "END"}
ROLLBACK_VERBS = {"ROLLBACK", "ABORT"}
_BEGIN = re.compile(r"^\s*(?:BEGIN|START\s+TRANSACTION)(?:\s+(?:WORK|TRANSACTION)\b)?(.*)$", re.I | re.S)
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.S)
_PG_OUTSIDE = re.compile(
    r"\s*(VACUUM|ALTER\s+SYSTEM|(CREATE|DROP)\s+(DATABASE|TABLESPACE)|CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY|"
    r"DROP\s+INDEX\s+CONCURRENTLY|REINDEX\b.*\bCONCURRENTLY)",
    re.I | re.S,
)
"""PostgreSQL statements that cannot run inside a transaction block (the session commits around them)."""


class ScriptRefused(ValueError):
    """The script holds a statement that must not run as given; the message names it by index."""


@dataclass(frozen=True)
class Finding:
    """Why one statement is dangerous."""

    index: int
    verb: str
    reason: str

    def text(self) -> str:
        return f"statement {self.index} ({self.verb}): {self.reason}"


def dangerous(stmt: Statement, dialect: str) -> str | None:
    """Why `stmt` may destroy a whole table's data, or None."""
    verb = stmt.verb
    if verb.startswith("DROP"):
        return f"{verb} destroys the object and its data"
    if verb == "TRUNCATE":
        return "TRUNCATE deletes every row"
    if stmt.kind != "dml" or verb not in {"UPDATE", "DELETE"}:
        return None
    has_where, cond = _where(stmt.sql, dialect)
    if not has_where:
        return f"{verb} without WHERE changes every row"
    if cond is not None and _always_true(cond):
        return f"{verb} with an always-true WHERE ({cond.sql(dialect=dialect)}) changes every row"
    return None


def _where(sql: str, dialect: str) -> tuple[bool, exp.Expression | None]:
    """(has a WHERE, its condition); the condition is None when the statement could not be parsed."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except (ParseError, TokenError, ValueError):
        # Unparsable: a WHERE keyword anywhere means we cannot judge it, no WHERE at all means every row.
        return bool(re.search(r"\bWHERE\b", _COMMENTS.sub(" ", sql), re.I)), None
    node = tree if isinstance(tree, (exp.Update, exp.Delete)) else tree.find(exp.Update, exp.Delete)
    if node is None:
        return True, None
    where = node.args.get("where")
    return (True, where.this) if isinstance(where, exp.Where) else (False, None)


def _always_true(e: exp.Expr) -> bool:
    """Conservatively: a condition made only of constants that holds (`1`, `TRUE`, `1=1`, `'a'='a'`, `x OR 1`)."""
    if isinstance(e, exp.Paren):
        return _always_true(e.this)
    if isinstance(e, exp.Boolean):
        return bool(e.this)
    if isinstance(e, exp.Literal):
        return not e.is_string and _nonzero(e.this)
    if isinstance(e, exp.Or):
        return _always_true(e.left) or _always_true(e.right)
    if isinstance(e, exp.And):
        return _always_true(e.left) and _always_true(e.right)
    if isinstance(e, (exp.EQ, exp.GTE, exp.LTE)):
        left, right = e.left, e.right
        return isinstance(left, exp.Literal) and isinstance(right, exp.Literal) and left == right
    return False


def _nonzero(text: str) -> bool:
    try:
        return float(text) != 0
    except ValueError:
        return True


def begin_modes(stmt: Statement) -> str:
    """The modes of a BEGIN/START TRANSACTION (`READ ONLY`, `ISOLATION LEVEL SERIALIZABLE`), or ''."""
    m = _BEGIN.match(_COMMENTS.sub(" ", stmt.sql))
    return " ".join(m.group(1).split()) if m else ""


def transaction_start(stmt: Statement, dialect: str) -> str | None:
    """The SQL that opens the script's transaction with its modes, or None when it has none. psycopg sends
    its own BEGIN before the first statement, so PostgreSQL gets `SET TRANSACTION <modes>` as the first
    statement of that transaction; MySQL starts one with the script's own statement."""
    modes = begin_modes(stmt)
    if not modes:
        return None
    return f"SET TRANSACTION {modes}" if dialect == "postgres" else stmt.sql


def check_script(statements: list[Statement], dialect: str, allow_dangerous: bool) -> list[Finding]:
    """Refuse (ScriptRefused) what cannot run as written; return the dangerous statements found.

    Dangerous statements are refused here unless `allow_dangerous`; the findings are returned either way
    so a review (check_only) can show them."""
    _check_transactions(statements, dialect)
    found = [Finding(s.index, s.verb, r) for s in statements if (r := dangerous(s, dialect))]
    if found and not allow_dangerous:
        first = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ScriptRefused(
            f"{first.text()}{more}; nothing was run: set exec_options.allow_dangerous to true to run it"
        )
    return found


def _check_transactions(statements: list[Statement], dialect: str) -> None:
    block: Statement | None = None  # the BEGIN of the open block
    ended = ""  # why the last block ended early (MySQL's implicit commit before DDL)
    for s in statements:
        where = f"statement {s.index} ({s.verb or s.sql[:20]})"
        if s.kind != "tx":
            if block is not None and _ends_block(s, block, dialect, where):
                block, ended = None, f" (statement {s.index} ended the block: MySQL commits before DDL)"
            continue
        if s.verb in BEGIN_VERBS:
            if block is not None:
                raise ScriptRefused(f"{where}: BEGIN inside an open BEGIN ... COMMIT block; close the first one")
            if begin_modes(s) and dialect not in TRANSACTIONAL:
                raise ScriptRefused(f"{where}: {dialect} has no transactions, so {begin_modes(s)} cannot be honoured")
            block, ended = s, ""
        elif s.verb in COMMIT_VERBS:
            block = None
        elif s.verb in ROLLBACK_VERBS and _plain_rollback(s):
            if dialect not in TRANSACTIONAL:
                raise ScriptRefused(f"{where}: {dialect} commits each statement, so ROLLBACK cannot undo anything")
            if block is None:
                raise ScriptRefused(
                    f"{where}: ROLLBACK outside a BEGIN ... block{ended}: "
                    "it would undo only part of what ran; open the transaction it undoes with BEGIN"
                )
            block = None
        else:
            what = s.short(40) if s.verb in ROLLBACK_VERBS else s.verb  # ROLLBACK TO SAVEPOINT, AND CHAIN
            raise ScriptRefused(
                f"statement {s.index}: {what} is not supported in a script: "
                "transactions are BEGIN ... COMMIT/ROLLBACK blocks or follow trans_batch_size"
            )


def _plain_rollback(s: Statement) -> bool:
    """ROLLBACK [WORK|TRANSACTION] [AND NO CHAIN]: not ROLLBACK TO SAVEPOINT, nor AND CHAIN / RELEASE."""
    words = _COMMENTS.sub(" ", s.sql).upper().split()
    chain = "CHAIN" in words and "NO" not in words
    return "TO" not in words and not chain and "RELEASE" not in words


def _ends_block(s: Statement, block: Statement, dialect: str, where: str) -> bool:
    """True when `s` ends the open block (MySQL commits before DDL); refused when the block's promise
    (its modes) would silently stop holding, or when PostgreSQL cannot run `s` in a transaction."""
    if dialect == "postgres" and _PG_OUTSIDE.match(_COMMENTS.sub(" ", s.sql)):
        raise ScriptRefused(f"{where}: cannot run inside a transaction block; put it outside BEGIN ... COMMIT")
    if dialect != "mysql" or s.kind != "ddl":
        return False
    if begin_modes(block):
        raise ScriptRefused(
            f"{where}: MySQL commits before DDL, which would end statement {block.index}'s "
            f"{begin_modes(block)} transaction early; put it outside the block"
        )
    return True
