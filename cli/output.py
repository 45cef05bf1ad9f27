"""What a command prints: with --json exactly one JSON document on stdout (errors too); otherwise text for
people on stdout, tables drawn by rich on a terminal and plain aligned columns in a pipe or CI log.
Notes (task ids, progress, what to do next) go to stderr, so stdout stays what a script reads."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence, Sized
from typing import Annotated, Any

import typer

_json_mode = False


def _set_json(value: bool) -> bool:
    global _json_mode
    _json_mode = _json_mode or value
    return value


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        callback=_set_json,
        is_eager=True,
        help='Print exactly one JSON document on stdout (errors as {"error": ...}); notes go to stderr.',
    ),
]


def json_mode(argv: Sequence[str] | None = None) -> bool:
    """Whether --json was given (also for a usage error found before the option was read)."""
    return _json_mode or "--json" in (sys.argv[1:] if argv is None else argv)


def emit(document: Any, human: Callable[[], None]) -> None:
    """Print `document` as JSON with --json, else call `human` to print it for people."""
    if json_mode():
        sys.stdout.write(json.dumps(document, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()
    else:
        human()


def note(message: str) -> None:
    """One line on stderr for the person or the CI log (never on stdout, which a script may parse)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def error(message: str, code: int, **extra: object) -> None:
    """Report a failure: `{"error": ...}` on stdout with --json (and the line on stderr), else one line."""
    if json_mode():
        sys.stdout.write(json.dumps({"error": message, **extra}, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()
    note(f"error: {message}")


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], footer: str = "") -> None:
    """Rows under a header: a rich table on a terminal, plain space-aligned columns otherwise (no
    truncation at 80 columns in a CI log)."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(*columns, box=None, header_style="bold", pad_edge=False)
        for row in cells:
            t.add_row(*row)
        console = Console(highlight=False)
        console.print(t)
        if footer:
            console.print(footer, style="dim")
        return
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    for row in [list(columns), *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if footer:
        print(footer)


def page_footer(data: dict[str, Any], shown: Sized) -> str:
    """`page 2: 20 of 57` under one page of a listing."""
    return f"page {data['page']}: {len(shown)} of {data['total']}"


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`name: value` lines for one record, skipping empty values."""
    shown = [(k, v) for k, v in pairs if v not in (None, "", [], {})]
    width = max((len(k) for k, _ in shown), default=0)
    for key, value in shown:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        print(f"{key + ':':<{width + 1}} {text}")


def size(n: int) -> str:
    """Bytes for people: 512 B, 1.5 KiB, 12.3 MiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
