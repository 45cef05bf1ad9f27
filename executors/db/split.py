"""Splitting a script into statements (sqlparse) and telling what each one is.

sqlparse's lexer knows quotes, comments (`--`, `#`, `/* */`), PostgreSQL dollar-quoted bodies and
BEGIN ... END blocks of MySQL procedures and triggers. The mysql client's `DELIMITER` directive is not
SQL at all, so it is handled here: the text between two directives is cut at the custom delimiter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import sqlparse
from sqlparse import tokens as T

Kind = Literal["ddl", "dml", "query", "tx", "other"]

_DDL = {"CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "COMMENT", "GRANT", "REVOKE", "OPTIMIZE", "ANALYZE"}
_DML = {"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT", "LOAD", "COPY"}
_QUERY = {"SELECT", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "VALUES", "TABLE", "EXISTS", "CHECK"}
_TX = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}
_OBJECTS = {
    "TABLE", "VIEW", "INDEX", "DATABASE", "SCHEMA", "FUNCTION", "PROCEDURE", "TRIGGER", "SEQUENCE", "TYPE",
    "EVENT", "USER", "ROLE", "EXTENSION", "MATERIALIZED", "DICTIONARY",
}  # fmt: skip
_DELIMITER = re.compile(r"^[ \t]*DELIMITER[ \t]+(\S+)[ \t]*$", re.IGNORECASE | re.MULTILINE)


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


def split_sql(script: str) -> list[Statement]:
    """The statements of `script` in order; comment-only pieces are dropped."""
    pieces: list[str] = []
    for delimiter, chunk in _by_delimiter(script):
        if delimiter == ";":
            pieces.extend(sqlparse.split(chunk))
        else:
            pieces.extend(chunk.split(delimiter))
    out: list[Statement] = []
    for piece in pieces:
        text = _clean(piece)
        if text:
            kind, verb = classify(text)
            out.append(Statement(len(out) + 1, text, kind, verb))
    return out


def _by_delimiter(script: str) -> list[tuple[str, str]]:
    """(delimiter, text) runs between `DELIMITER x` lines; one `;` run when there are none."""
    runs: list[tuple[str, str]] = []
    delimiter, pos = ";", 0
    for m in _DELIMITER.finditer(script):
        runs.append((delimiter, script[pos : m.start()]))
        delimiter, pos = m.group(1), m.end()
    runs.append((delimiter, script[pos:]))
    return runs


def _clean(piece: str) -> str:
    """Drop surrounding whitespace, trailing comments and the final `;`: drivers run one statement each."""
    parsed = sqlparse.parse(piece)
    if not parsed:
        return ""
    tokens = list(parsed[0].flatten())
    while tokens and (
        tokens[-1].is_whitespace or tokens[-1].ttype in T.Comment or tokens[-1].match(T.Punctuation, ";")
    ):
        tokens.pop()
    while tokens and (tokens[0].is_whitespace or tokens[0].ttype in T.Comment):
        tokens.pop(0)
    return "".join(t.value for t in tokens).strip()


def classify(sql: str) -> tuple[Kind, str]:
    """(kind, verb) from the leading keywords; `WITH ...` takes the kind of the statement it leads to."""
    # Top-level tokens only: a CTE's own SELECT sits inside a group and does not decide the kind.
    words = [
        t.normalized.upper() for t in sqlparse.parse(sql)[0].tokens if t.ttype is not None and t.ttype in T.Keyword
    ]
    if not words:
        return "other", sql.split(None, 1)[0].upper() if sql.split() else ""
    flat = " ".join(words).split()  # sqlparse groups some keywords ("CREATE OR REPLACE", "ORDER BY")
    first = flat[0]
    if first == "WITH":
        body = next((w for w in words[1:] if w in _DML or w == "SELECT"), "SELECT")
        return ("dml" if body in _DML else "query"), body
    if first in _DDL:
        noun = next((w for w in flat[1:] if w in _OBJECTS), "") if first in {"CREATE", "ALTER", "DROP"} else ""
        return "ddl", f"{first} {noun}".strip()
    if first in _DML:
        return "dml", first
    if first in _QUERY:
        return "query", first
    if first in _TX:
        return "tx", " ".join(flat[:2]) if first == "START" else first
    return "other", first
