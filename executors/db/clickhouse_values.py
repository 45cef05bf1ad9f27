"""INSERT ... VALUES over ClickHouse's native protocol: the rows read from the text, sent as INSERT ... SELECT.

Over TCP the server wants inline rows as typed blocks from the client, so the statement's rows are cut
out of its text here (quotes, comments and brackets respected) and each value cast by the server.
"""

from __future__ import annotations

import itertools
import re

from executors.db.clickhouse_session import ClickHouseError

_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_DECIMAL_TYPE = re.compile(r"^(Nullable\(|LowCardinality\()*Decimal")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NULL = re.compile(r"^null$", re.IGNORECASE)
_LOW_CARDINALITY = re.compile(r"^LowCardinality\((?P<inner>.*)\)$")
_NEVER_NULLABLE = ("Nullable(", "Array(", "Map(", "Tuple(", "Nested(", "LowCardinality(", "Object(", "JSON", "Variant(")
"""Types already Nullable, or that cannot be inside Nullable (ClickHouse refuses `Nullable(Array(...))`)."""
ROW = "__tiangong_row"
"""The name of the array element the rewrite picks its values from (not a name a table's column is likely to have)."""


def _skip(text: str, i: int) -> int:
    """The index after the quoted name, string or comment starting at `i` (or `i` + 1 for anything else)."""
    ch = text[i]
    if ch in "'\"`":
        j = i + 1
        while j < len(text):
            if text[j] == "\\":
                j += 2
            elif text[j] == ch:
                if text[j + 1 : j + 2] != ch:  # a doubled quote stands for itself
                    return j + 1
                j += 2
            else:
                j += 1
        raise ClickHouseError("cannot read the statement: a quote is not closed")
    if text.startswith("--", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end + 1
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        return len(text) if end < 0 else end + 2
    return i + 1


def _top_level(text: str) -> list[tuple[int, str]]:
    """(index, char) of what lies outside brackets: characters, opening brackets, and one quote character
    (or a space, for a comment) standing for each quoted name, string or comment."""
    out: list[tuple[int, str]] = []
    depth, i = 0, 0
    while i < len(text):
        ch, nxt = text[i], _skip(text, i)
        if nxt > i + 1 or ch in "'\"`":
            if depth == 0:
                out.append((i, ch if ch in "'\"`" else " "))
            i = nxt
            continue
        if ch in "([{":
            if depth == 0:
                out.append((i, ch))
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            out.append((i, ch))
        i = nxt
    return out


def _closing(text: str, i: int) -> int:
    """The index of the bracket closing the one at `i`."""
    depth = 0
    while i < len(text):
        ch, nxt = text[i], _skip(text, i)
        if ch in "([{" and nxt == i + 1:
            depth += 1
        elif ch in ")]}" and nxt == i + 1:
            depth -= 1
            if depth == 0:
                return i
        i = nxt
    raise ClickHouseError("cannot read the VALUES rows: a row is not closed")


def inline_values(sql: str) -> tuple[str, str] | None:
    """(head, rows text) of an INSERT whose rows follow VALUES (or FORMAT Values); None for INSERT SELECT."""
    chars = _top_level(sql)
    flat = "".join(ch if ch.isalnum() or ch == "_" else " " for _, ch in chars)
    words = [(m.group().upper(), chars[m.start()][0], chars[m.end() - 1][0] + 1) for m in _WORD.finditer(flat)]
    for n, (word, start, end) in enumerate(words):
        if word in {"SELECT", "WITH"}:
            return None
        if word == "VALUES":
            return sql[:start].rstrip(), sql[end:]
        if word == "FORMAT":
            fmt = words[n + 1] if n + 1 < len(words) else ("", end, end)
            if fmt[0] != "VALUES":
                raise ClickHouseError(
                    f"INSERT ... FORMAT {fmt[0] or '?'} with inline data needs protocol http:"
                    " over the native protocol only VALUES rows are supported"
                )
            return sql[:start].rstrip(), sql[fmt[2] :]
    return None


def values_rows(data: str) -> list[list[str]]:
    """The rows of a VALUES clause, each a list of value expressions (text)."""
    rows: list[list[str]] = []
    i = 0
    while True:
        # Rows may be separated by commas, whitespace and comments, as the VALUES format reads them.
        while i < len(data):
            nxt = _skip(data, i)
            if data[i].isspace() or data[i] == ",":
                i += 1
            elif nxt > i + 1 and data[i] in "-/":  # a comment
                i = nxt
            else:
                break
        if i >= len(data):
            break
        if data[i] != "(":
            raise ClickHouseError(f"cannot read the VALUES rows: expected '(' at {data[i : i + 20]!r}")
        end = _closing(data, i)
        body = data[i + 1 : end]
        rows.append([p.strip() for p in _cut(body, [j for j, ch in _top_level(body) if ch == ","])])
        i = end + 1
    if not rows:
        raise ClickHouseError("INSERT ... VALUES has no rows")
    return rows


def _cut(text: str, at: list[int]) -> list[str]:
    bounds = [-1, *at, len(text)]
    return [text[a + 1 : b] for a, b in itertools.pairwise(bounds)]


def _null_type(type_name: str) -> str | None:
    """The type a NULL for a column of `type_name` is cast to: its Nullable form, so that the server's own
    insert conversion decides what a NULL in a non-Nullable column becomes (the column's DEFAULT where
    `insert_null_as_default` is on, as its VALUES parser does with `input_format_null_as_default`; an
    error on servers without it, such as 18.16, whose VALUES parser refuses it too). None when the type
    is Nullable already or cannot be made Nullable."""
    low = _LOW_CARDINALITY.match(type_name)
    inner = low.group("inner") if low else type_name
    if inner.startswith(_NEVER_NULLABLE):
        return None
    return f"Nullable({inner})"


def _cast(value: str, type_name: str) -> str:
    """`value` (an expression's text) cast to `type_name` by the server."""
    if _NULL.match(value):
        type_name = _null_type(type_name) or type_name
    elif _DECIMAL_TYPE.match(type_name) and _NUMBER.match(value):
        value = f"'{value}'"  # read as text by the Decimal parser: exact, as the VALUES format reads it
    quoted = type_name.replace("\\", "\\\\").replace("'", "\\'")
    return f"CAST({value}, '{quoted}')"


def _name(column: str) -> str:
    return "`" + column.replace("\\", "\\\\").replace("`", "\\`") + "`"


def insert_select(head: str, types: list[tuple[str, str]], rows: list[list[str]]) -> str:
    """`head SELECT ...` over an array of tuples, each value cast to its column's type by the server.

    Each picked value is named after its column, so a server error names the column, not `tupleElement`."""
    tuples = ", ".join(
        "tuple(" + ", ".join(_cast(v, t) for v, (_, t) in zip(row, types, strict=True)) + ")" for row in rows
    )
    picks = ", ".join(f"tupleElement({ROW}, {i}) AS {_name(c)}" for i, (c, _) in enumerate(types, 1))
    return f"{head} SELECT {picks} FROM (SELECT arrayJoin([{tuples}]) AS {ROW})"
