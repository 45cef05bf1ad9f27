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
from sqlglot.dialects import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from executors.db.split import Statement, has_executable_comment, unwrap_executable

TRANSACTIONAL = {"mysql", "postgres"}
"""Dialects whose sessions run batches in transactions; doris and clickhouse commit each statement."""
BEGIN_VERBS = {"BEGIN", "START TRANSACTION"}
COMMIT_VERBS = {"COMMIT", "END"}
ROLLBACK_VERBS = {"ROLLBACK", "ABORT"}
_BEGIN = re.compile(r"^\s*(?:BEGIN|START\s+TRANSACTION)(?:\s+(?:WORK|TRANSACTION)\b)?(.*)$", re.I | re.S)
_MODES = re.compile(
    r"^(?:(?:ISOLATION\s+LEVEL\s+(?:SERIALIZABLE|REPEATABLE\s+READ|READ\s+COMMITTED|READ\s+UNCOMMITTED)"
    r"|READ\s+ONLY|READ\s+WRITE|(?:NOT\s+)?DEFERRABLE|WITH\s+CONSISTENT\s+SNAPSHOT)\s*(?:,\s*|\s+|$))*$",
    re.I,
)
"""Transaction modes a BEGIN/START TRANSACTION may carry. Anything else is not a transaction start: MariaDB's
`BEGIN NOT ATOMIC <statements> END` is a compound statement, and sent as the block's opener it would run
statements the guard never saw."""
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
    """Why `stmt` may destroy a whole table's data, or None.

    Every UPDATE and DELETE the statement holds is judged, not only a leading one: PostgreSQL's
    `WITH d AS (DELETE FROM t RETURNING *) INSERT ...` and ClickHouse's `ALTER TABLE t DELETE WHERE ...`
    delete as surely. MySQL's executable comments are judged as the server runs them."""
    verb = stmt.verb
    if verb.startswith("DROP"):
        return f"{verb} destroys the object and its data"
    if verb == "TRUNCATE":
        return "TRUNCATE deletes every row"
    if stmt.kind == "tx":
        return None
    sql = stmt.sql
    hidden = dialect in _EXECUTABLE_DIALECTS and has_executable_comment(sql)
    if hidden:
        sql = unwrap_executable(sql)
    for what, has_where, cond in _writes(sql, stmt, dialect):
        if hidden:
            return (
                f"{what} with a MySQL executable comment (/*! ... */): which WHERE runs depends on the "
                "server's version, so it cannot be checked"
            )
        if not has_where:
            return f"{what} without WHERE changes every row"
        if cond is None:
            return f"{what}'s WHERE could not be parsed to check that it does not match every row"
        why = _wide(cond)
        if why:
            return f"{what} with {why.replace('{}', cond.sql(dialect=dialect))}"
    return None


_EXECUTABLE_DIALECTS = {"mysql", "doris"}
_MODIFIERS = re.compile(r"^(\s*(?:UPDATE|DELETE))((?:\s+(?:LOW_PRIORITY|QUICK|IGNORE))+)(?=\s)", re.I)
"""MySQL's `DELETE IGNORE` / `UPDATE LOW_PRIORITY`: sqlglot cannot parse them, and they change nothing
about which rows match."""
_WRITES = {"UPDATE", "DELETE"}
_ROUTINES = {"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"}
_WRITE_WORDS = re.compile(r"\b(UPDATE|DELETE|MERGE)\b", re.I)


def _merge_changes(when: exp.When) -> bool:
    then = when.args.get("then")
    changes = isinstance(then, exp.Update) or (isinstance(then, exp.Var) and then.name.upper() == "DELETE")
    return bool(when.args.get("matched")) and changes


def _writes(sql: str, stmt: Statement, dialect: str) -> list[tuple[str, bool, exp.Expression | None]]:
    """(UPDATE or DELETE, has a WHERE, its condition) for each UPDATE/DELETE in the statement; the
    condition is None when the statement could not be parsed."""
    if not _WRITE_WORDS.search(sql):
        return []
    try:
        tree = sqlglot.parse_one(_MODIFIERS.sub(r"\1", sql), read=dialect)
    except (ParseError, TokenError, ValueError):
        tree = None
    if isinstance(tree, exp.Create) and str(tree.kind or "").upper() in _ROUTINES:
        return []  # a routine's body runs when called, not when created (as PostgreSQL's $$ bodies)
    if tree is not None and not isinstance(tree, exp.Command):
        out: list[tuple[str, bool, exp.Expression | None]] = []
        for node in tree.find_all(exp.Update, exp.Delete, exp.Merge):
            if isinstance(node, exp.Merge):
                # MERGE ... ON <cond> WHEN MATCHED THEN DELETE/UPDATE: the ON condition picks the rows.
                if any(_merge_changes(w) for w in node.find_all(exp.When)):
                    on = node.args.get("on")
                    out.append(("MERGE", on is not None, on if isinstance(on, exp.Expression) else None))
                continue
            where = node.args.get("where")
            name = "UPDATE" if isinstance(node, exp.Update) else "DELETE"
            if node is not tree:
                name = f"the {name} inside it"
            out.append((name, *((True, where.this) if isinstance(where, exp.Where) else (False, None))))
        return out
    # Unparsable (or only a command to sqlglot): judged from the text after its first top-level WHERE.
    text = _COMMENTS.sub(" ", sql) if dialect != "postgres" else sql
    mutation = dialect == "clickhouse" and stmt.verb.startswith("ALTER")  # ALTER TABLE t UPDATE/DELETE WHERE
    writes = stmt.verb in _WRITES or (mutation and re.search(r"\b(UPDATE|DELETE)\b", text, re.I) is not None)
    if not writes:
        return []
    name = stmt.verb if stmt.verb in _WRITES else "ALTER ... UPDATE/DELETE"
    rest = _after_where(sql, dialect)
    if rest is None:
        return [(name, False, None)]
    try:
        select = sqlglot.parse_one(f"SELECT 1 FROM _t WHERE {rest}", read=dialect)
        where = select.args.get("where")
        cond = where.this if isinstance(where, exp.Where) else None
    except (ParseError, TokenError, ValueError):
        cond = None
    return [(name, True, cond)]


def _after_where(sql: str, dialect: str) -> str | None:
    """The text after the statement's first WHERE outside parentheses, or None when there is none."""
    try:
        tokens = list(Dialect.get_or_raise(dialect).tokenize(sql))
    except TokenError:
        m = re.search(r"\bWHERE\b", _COMMENTS.sub(" ", sql), re.I)
        return "" if m else None  # an empty condition does not parse: "could not be parsed"
    depth = 0
    for tok in tokens:
        depth += tok.token_type == TokenType.L_PAREN
        depth -= tok.token_type == TokenType.R_PAREN
        if depth == 0 and tok.token_type == TokenType.WHERE:
            return sql[tok.end + 1 :]
    return None


def _wide(e: exp.Expr) -> str | None:
    """Why condition `e` holds for every row (`{}` stands for the condition), or None. Conservatively:
    constants that hold (`1`, `TRUE`, `1=1`, `x OR 1`), a condition that reads no column at all (`NOT 0`,
    `2 > 1`, `'1'`: it matches every row or none), a column compared with itself (`id = id`)."""
    if isinstance(e, exp.Paren):
        return _wide(e.this)
    if _always_true(e):
        return "an always-true WHERE ({}) changes every row"
    if e.find(exp.Column) is None and not _always_false(e):
        return "a WHERE that reads no column ({}) changes every row or none"
    if isinstance(e, exp.Or):
        return _wide(e.left) or _wide(e.right)
    if isinstance(e, exp.And):
        return _wide(e.left) if _wide(e.left) and _wide(e.right) else None
    if isinstance(e, (exp.EQ, exp.GTE, exp.LTE, exp.NullSafeEQ)) and _same_column(e.left, e.right):
        return "a WHERE comparing a column with itself ({}) changes every row where it is not NULL"
    return None


def _always_false(e: exp.Expr) -> bool:
    """A constant condition that plainly matches nothing (`1 = 0`, `FALSE`, `0`, `NULL`): harmless."""
    if isinstance(e, exp.Paren):
        return _always_false(e.this)
    if isinstance(e, (exp.Null, exp.Boolean)):
        return not e.this if isinstance(e, exp.Boolean) else True
    if isinstance(e, exp.Literal):
        return not e.is_string and not _nonzero(e.this)
    if isinstance(e, exp.And):
        return _always_false(e.left) or _always_false(e.right)
    if isinstance(e, exp.Or):
        return _always_false(e.left) and _always_false(e.right)
    if isinstance(e, exp.EQ):  # numbers only: MySQL has '1' = 1 and 'a' = 'A' (a _ci collation) true
        numbers = [x for x in (e.left, e.right) if isinstance(x, exp.Literal) and not x.is_string]
        return len(numbers) == 2 and _number(numbers[0].this) != _number(numbers[1].this)
    return False


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _same_column(a: exp.Expr, b: exp.Expr) -> bool:
    while isinstance(a, exp.Paren):
        a = a.this
    while isinstance(b, exp.Paren):
        b = b.this
    if not isinstance(a, exp.Column) or not isinstance(b, exp.Column):
        return False
    if a.name.lower() != b.name.lower():
        return False
    return not a.table or not b.table or a.table.lower() == b.table.lower()


def _always_true(e: exp.Expr) -> bool:
    """A condition made only of constants that holds (`1`, `TRUE`, `1=1`, `'a'='a'`, `x OR 1`)."""
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
            if begin_modes(s) and not _MODES.match(begin_modes(s)):
                raise ScriptRefused(
                    f"statement {s.index}: {s.short(40)} is not supported in a script: "
                    "a BEGIN carries only transaction modes (READ ONLY, ISOLATION LEVEL ...)"
                )
            if begin_modes(s) and dialect not in TRANSACTIONAL:
                raise ScriptRefused(f"{where}: {dialect} has no transactions, so {begin_modes(s)} cannot be honoured")
            block, ended = s, ""
        elif s.verb in COMMIT_VERBS and _plain_end(s):
            block = None
        elif s.verb in ROLLBACK_VERBS and _plain_end(s):
            if dialect not in TRANSACTIONAL:
                raise ScriptRefused(f"{where}: {dialect} commits each statement, so ROLLBACK cannot undo anything")
            if block is None:
                raise ScriptRefused(
                    f"{where}: ROLLBACK outside a BEGIN ... block{ended}: "
                    "it would undo only part of what ran; open the transaction it undoes with BEGIN"
                )
            block = None
        else:
            # ROLLBACK TO SAVEPOINT, COMMIT/ROLLBACK AND CHAIN, ROLLBACK/COMMIT PREPARED, COMMIT RELEASE
            what = s.short(40) if s.verb in ROLLBACK_VERBS | COMMIT_VERBS else s.verb
            raise ScriptRefused(
                f"statement {s.index}: {what} is not supported in a script: "
                "transactions are BEGIN ... COMMIT/ROLLBACK blocks or follow trans_batch_size"
            )


def _plain_end(s: Statement) -> bool:
    """COMMIT/END/ROLLBACK/ABORT [WORK|TRANSACTION] [AND NO CHAIN]: what the loop does (a plain commit or
    rollback of the block). Not ROLLBACK TO SAVEPOINT, AND CHAIN (the next transaction would keep the
    block's modes), COMMIT/ROLLBACK PREPARED (another transaction), RELEASE (ends the session)."""
    words = _COMMENTS.sub(" ", s.sql).upper().split()
    if not set(words) <= {"COMMIT", "END", "ROLLBACK", "ABORT", "WORK", "TRANSACTION", "AND", "NO", "CHAIN"}:
        return False
    return "CHAIN" not in words or "NO" in words


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
