"""Splitting a script into statements with the target's own lexical rules, and telling what each one is.

sqlglot's tokenizer lexes per dialect, which matters: `#` starts a comment in MySQL but is an operator in
PostgreSQL, `stock--1` is arithmetic in MySQL, `'C:\\'` is a whole string in PostgreSQL, dollar-quoted
bodies hold semicolons. Statements are cut at top-level semicolons and sent as the exact text the script
holds (comments included: MySQL's `/*! ... */` are code), without the final `;`. Semicolons inside
`BEGIN ... END` bodies of MySQL procedures, functions, triggers and events (and PostgreSQL's
`BEGIN ATOMIC`) do not cut. The mysql client's `DELIMITER` directive is handled for mysql and doris.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Literal

from sqlglot.dialects import Dialect
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

Kind = Literal["ddl", "dml", "query", "tx", "other"]

_DDL = {
    "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "COMMENT", "GRANT", "REVOKE",
    # MySQL commits implicitly before these (and PostgreSQL runs VACUUM and friends outside transactions),
    # so they are batch boundaries too.
    "LOCK", "UNLOCK", "FLUSH", "OPTIMIZE", "ANALYZE", "CHECK", "REPAIR", "CHECKSUM", "CACHE", "RESET",
    "INSTALL", "UNINSTALL", "VACUUM", "REINDEX", "CLUSTER",
}  # fmt: skip
_DML = {"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT", "LOAD", "COPY"}
_QUERY = {"SELECT", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "VALUES", "TABLE", "EXISTS"}
_TX = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
_OBJECTS = {
    "TABLE", "VIEW", "INDEX", "DATABASE", "SCHEMA", "FUNCTION", "PROCEDURE", "TRIGGER", "SEQUENCE", "TYPE",
    "EVENT", "USER", "ROLE", "EXTENSION", "MATERIALIZED", "DICTIONARY",
}  # fmt: skip
_ROUTINES = {"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"}
_BLOCK_ENDS = {"IF", "LOOP", "WHILE", "REPEAT"}  # END IF etc. close constructs not counted as blocks
_STRINGS = {
    TokenType.STRING, TokenType.IDENTIFIER, TokenType.HEREDOC_STRING, TokenType.BYTE_STRING,
    TokenType.NATIONAL_STRING, TokenType.RAW_STRING, TokenType.HEX_STRING, TokenType.BIT_STRING,
}  # fmt: skip
_DELIMITER = re.compile(r"^[ \t]*DELIMITER[ \t]+(\S+)[ \t]*$", re.IGNORECASE | re.MULTILINE)
_DELIMITER_DIALECTS = {"mysql", "doris"}
_EXECUTABLE = re.compile(r"/\*M?!\d*(.*?)\*/", re.DOTALL)
"""MySQL's `/*!NNNNN code */` and MariaDB's `/*M!NNNNNN code */`: comments the server runs as code."""


def has_executable_comment(text: str) -> bool:
    """Whether `text` holds a comment MySQL or MariaDB runs as code."""
    return _EXECUTABLE.search(text) is not None


def unwrap_executable(text: str) -> str:
    """`text` with every executable comment's code in the open, as a server recent enough runs it."""
    return _EXECUTABLE.sub(lambda m: f" {m.group(1)} ", text)


class SplitError(ValueError):
    """The script cannot be lexed (an unterminated string or comment); the message says where."""


@dataclass(frozen=True)
class Statement:
    """One statement of a script: 1-based `index`, its text without the final delimiter, its kind."""

    index: int
    sql: str
    kind: Kind
    verb: str
    """The leading keyword(s), e.g. UPDATE, CREATE TABLE, START TRANSACTION: for logs and rollback notes."""

    def short(self, width: int = 80) -> str:
        """The statement on one line, cut to `width` characters, for log lines."""
        one = " ".join(self.sql.split())
        return one if len(one) <= width else one[: width - 3] + "..."


def split_sql(script: str, dialect: str = "mysql") -> list[Statement]:
    """The statements of `script` in order; pieces holding only comments are dropped."""
    out: list[Statement] = []
    runs = _by_delimiter(script) if dialect in _DELIMITER_DIALECTS else [(";", script)]
    for delimiter, chunk in runs:
        pieces = _split(chunk, dialect) if delimiter == ";" else _split_custom(chunk, delimiter, dialect)
        for text, tokens in pieces:
            executable = dialect in _DELIMITER_DIALECTS and has_executable_comment(text)
            if tokens or executable:  # MySQL's executable comments are statements
                # A statement that is only an executable comment is what the comment's code is: a
                # `/*!40000 DELETE FROM t */` is a DELETE for the guard and the batching.
                kind, verb = classify(tokens or _tokens(unwrap_executable(text), dialect))
                out.append(Statement(len(out) + 1, text, kind, verb))
    return out


def _tokens(text: str, dialect: str) -> list[Token]:
    try:
        return list(Dialect.get_or_raise(dialect).tokenize(text))
    except TokenError as exc:
        raise SplitError(f"cannot split the script: {exc}") from None


def _split(text: str, dialect: str) -> list[tuple[str, list[Token]]]:
    tokens = _tokens(text, dialect)
    pieces: list[tuple[str, list[Token]]] = []
    start, first, depth, routine = 0, 0, 0, False
    for i, tok in enumerate(tokens):
        tt, word = tok.token_type, tok.text.upper()
        if tt == TokenType.SEMICOLON and depth == 0:
            pieces.append((text[start : tok.start].strip(), tokens[first:i]))
            start, first, routine = tok.end + 1, i + 1, False
            continue
        if i - first < 12 and word in _ROUTINES and tokens[first].text.upper() == "CREATE":
            routine = True
        nxt = tokens[i + 1].text.upper() if i + 1 < len(tokens) else ";"
        opens_body = tt == TokenType.BEGIN and word == "BEGIN" and (routine or nxt == "ATOMIC")
        if (opens_body and nxt not in {";", "WORK"}) or (tt == TokenType.CASE and depth > 0):
            depth += 1
        elif tt == TokenType.END and depth > 0 and nxt not in _BLOCK_ENDS:
            depth -= 1
    pieces.append((text[start:].strip(), tokens[first:]))
    return pieces


def _split_custom(text: str, delimiter: str, dialect: str) -> list[tuple[str, list[Token]]]:
    """Cut at `delimiter` where it is not inside a string or quoted name (`DELIMITER //` runs)."""
    try:
        inside = [(t.start, t.end) for t in Dialect.get_or_raise(dialect).tokenize(text) if t.token_type in _STRINGS]
    except TokenError:
        inside = []  # a custom delimiter often does not lex (`$$`): cut at every occurrence
    pieces, start = [], 0
    for m in re.finditer(re.escape(delimiter), text):
        if any(a <= m.start() <= b for a, b in inside) or m.start() < start:
            continue
        pieces.append(text[start : m.start()].strip())
        start = m.end()
    pieces.append(text[start:].strip())
    return [(p, _tokens(p, dialect) if p else []) for p in pieces]


def _by_delimiter(script: str) -> list[tuple[str, str]]:
    """(delimiter, text) runs between `DELIMITER x` lines; one `;` run when there are none."""
    runs: list[tuple[str, str]] = []
    delimiter, pos = ";", 0
    for m in _DELIMITER.finditer(script):
        runs.append((delimiter, script[pos : m.start()]))
        delimiter, pos = m.group(1), m.end()
    runs.append((delimiter, script[pos:]))
    return runs


def classify(tokens: list[Token]) -> tuple[Kind, str]:
    """(kind, verb) from the leading keywords; `WITH ...` takes the kind of the statement it leads to."""
    # Some keywords come as one token ("LOCK TABLES", "ORDER BY"): look at words.
    words = " ".join(t.text.upper() for t in tokens).split()
    if not words:
        return "other", ""
    first = words[0]
    if first == "WITH":
        level = 0
        for t in tokens[1:]:
            level += t.token_type == TokenType.L_PAREN
            level -= t.token_type == TokenType.R_PAREN
            if level == 0 and t.text.upper() in _DML | {"SELECT"}:
                body = t.text.upper()
                return ("dml" if body in _DML else "query"), body
        return "query", "SELECT"
    if first in _DDL:
        noun = next((w for w in words[1:8] if w in _OBJECTS), "") if first in {"CREATE", "ALTER", "DROP"} else ""
        return "ddl", f"{first} {noun}".strip()
    if first in _DML:
        return "dml", first
    if first in _QUERY:
        return "query", first
    if first in _TX:
        return "tx", " ".join(words[:2]) if first == "START" else first
    if first == "SET" and _sets_autocommit(tokens):
        return "tx", "SET AUTOCOMMIT"
    return "other", first


def _sets_autocommit(tokens: list[Token]) -> bool:
    """A SET naming the autocommit variable in any form (`autocommit`, `SESSION autocommit`,
    `@@session.autocommit`, in a list of assignments); `@autocommit` is a user variable."""
    return any(
        t.text.upper() == "AUTOCOMMIT" and t.token_type not in _STRINGS and prev.token_type != TokenType.PARAMETER
        for prev, t in itertools.pairwise(tokens)
    )
