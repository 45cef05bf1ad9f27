"""Masking of secrets: in a task's params, env and command as the API shows them (by key name and by
shape: URL passwords, `--password=x`, `mysql -px`, Authorization headers), and in its output (by value).

Every function here runs in time linear in its input: the patterns are bounded or anchored on a literal,
and the URL scanner never looks at a character twice (a 40 KB command once took 29 s with a regex).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MASK = "******"

_SECRET_KEY = re.compile(
    r"pass(word|wd)?|pwd|secret|token|api[-_]?key|auth|credential|private[-_]?key|access[-_]?key|cookie"
)
"""Searched in the lowered key: a case-insensitive alternation is many times slower."""

# Command-line shapes that carry a secret value. They are matched on an ASCII-lowered bytes copy of the
# text (same length, so positions carry over) and anchored on their keyword, which the regex engine finds
# fast; the part before the keyword is then matched backwards, anchored, on a short reversed slice.
# Patterns that began with a lookbehind or a case-insensitive alternation cost ~70 ms per MB.
# An unquoted value ends at a shell metacharacter: in `PGPASSWORD=pw; psql` the secret is `pw`, not `pw;`.
_VALUE = rb"""(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<bare>[^\s'"`;&|<>()]+))"""
_KEYWORD = re.compile(
    rb"(?P<kw>pass(?:word|wd)?|pwd|secret|token|api[-_]?key|access[-_]?key|secret[-_]?key|private[-_]?key)"
    rb"(?P<sep>=|[ \t]+(?![-\s]))" + _VALUE
)
_BEFORE_CHARS = 64
# Reversed: what must precede the keyword, read from the keyword leftwards, up to the token's start.
_FLAG_BEFORE = re.compile(rb"(?:[-_.][a-z0-9]+){0,4}--?(?:[^\w-]|\Z)")
"""`--password x`, `--db-password=x`, `-pass x`: the keyword ends a flag."""
_NAME_BEFORE = re.compile(rb"\w{0,40}(?:[^\w-]|\Z)")
"""`PGPASSWORD=x`, `export API_TOKEN=x`: the keyword ends a variable name."""
_SHORT_NAME_BEFORE = re.compile(rb"(?:_\w{0,40})?(?:[^\w-]|\Z)")
"""`pass=x`, `DB_PASS=x`, `MYSQL_PWD=x`, but not `COMPASS=x` or `PWD=/home`-like words."""
_HEADER = re.compile(
    rb"(?P<kw>authorization|x-api-key|x-auth-token|private-token|api-key)[ \t]*:[ \t]*"
    rb"(?:(?:bearer|basic|token|digest|negotiate|apikey)[ \t]+)?" + _VALUE
)
_HEADER_BEFORE = re.compile(rb"(?:-yxorp)?(?:[^\w-]|\Z)")  # reversed: an optional `proxy-`
# mysql's `-pSECRET` (the password glued to the flag): only in a command line that runs a MySQL client.
_MYSQL_P = re.compile(rb"-p(?![-\s])" + _VALUE)
_HINTS = (b"pass", b"pwd", b"secret", b"token", b"key", b"authorization", b"-p")
"""Text holding none of these has no flag, assignment or header to mask: the common case stops here."""
_FLAG_ALONE = re.compile(
    r"--?(?:[a-z0-9]+[-_.]){0,4}(?:pass(?:word|wd)?|pwd|secret|token|api[-_]?key|access[-_]?key|secret[-_]?key"
    r"|private[-_]?key)",
    re.I,
)


def is_secret_key(key: str) -> bool:
    """Whether a params/env key names a secret (password, token, Authorization header...).
    `secret_keys` itself only lists names: it is not one."""
    low = key.lower()
    return low != "secret_keys" and _SECRET_KEY.search(low) is not None


# URL passwords (`scheme://user:password@host`) are found by a scanner rather than a regex: the regex
# tried every start of a long run of letters as a scheme, which made it quadratic.
_URL_USER = re.compile(r"[^:/@\s]*:")
_URL_PASSWORD = re.compile(r"[^@\s]+")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


def _url_password_spans(text: str) -> Iterator[tuple[int, int]]:
    search = 0
    while (i := text.find("://", search)) >= 0:
        search = i + 3
        if i == 0 or text[i - 1] not in _SCHEME_CHARS:
            continue
        user = _URL_USER.match(text, i + 3)  # stops at the next ':' or '/': never past the next "://"
        if user is None:
            continue
        pw = _URL_PASSWORD.match(text, user.end())
        if pw is None:
            continue
        if pw.end() < len(text) and text[pw.end()] == "@":
            yield pw.start(), pw.end()
            search = pw.end() + 1
        else:
            # Every "://" before pw.end() ends its password run at the same place, without an '@': skip them.
            search = max(search, pw.end())


MAX_SPANS = 10_000
"""Secret values looked for in one command line (each costs a little Python). A line holding more is
shown masked whole from there on; the values past it are not looked for (a task's output is masked with
at most wire.masker.MAX_SECRETS values anyway)."""


def _spans(text: str, mysql: bool) -> tuple[list[tuple[int, int]], int]:
    """Where the secret values of flags, assignments, headers and URLs lie in a command line, and where
    the search stopped (len(text) unless it found more than MAX_SPANS)."""
    found: list[tuple[int, int]] = []
    cut = len(text)
    if "://" in text:
        for span in _url_password_spans(text):
            if len(found) == MAX_SPANS:
                cut = span[0]
                break
            found.append(span)
    # One byte per character (non-ASCII becomes "?"), lowered: positions are the text's.
    low = text.encode("ascii", errors="replace").lower()
    if not any(hint in low for hint in _HINTS):
        return found, cut
    examined = 0
    for pattern in (_KEYWORD, _HEADER, _MYSQL_P):
        if pattern is _MYSQL_P and not (mysql or b"mysql" in low or b"mariadb" in low):
            continue
        for m in pattern.finditer(low, 0, cut):
            examined += 1
            if examined > 3 * MAX_SPANS:  # bounds the work on look-alikes too (`compass=x` repeated)
                cut = m.start()
                break
            group = m.lastgroup or "bare"
            if m.start(group) < m.end(group) and _precedes_value(pattern, m, low):
                found.append((m.start(group), m.end(group)))
    found = [span for span in found if span[0] < cut]
    if len(found) > MAX_SPANS:
        found.sort()
        cut = found[MAX_SPANS][0]
        found = found[:MAX_SPANS]
    return found, cut


def _precedes_value(pattern: re.Pattern[bytes], m: re.Match[bytes], low: bytes) -> bool:
    """Whether what stands before the match makes it a secret: a flag or variable name, a header name."""
    if pattern is _KEYWORD:
        before = _reversed_before(low, m.start(), _BEFORE_CHARS)
        return _FLAG_BEFORE.match(before) is not None or (m["sep"] == b"=" and _name_before(m["kw"], before))
    if pattern is _HEADER:
        return _HEADER_BEFORE.match(_reversed_before(low, m.start(), 8)) is not None
    return m.start() == 0 or low[m.start() - 1 : m.start()] not in _WORD_OR_DASH


def _reversed_before(low: bytes, start: int, width: int) -> bytes:
    """Up to `width` bytes before `start`, nearest first."""
    if start == 0:
        return b""
    stop = start - width - 1
    return low[start - 1 : stop if stop >= 0 else None : -1]


def _name_before(keyword: bytes, before: bytes) -> bool:
    """Whether the keyword ends a variable name (`pass` and `pwd` only after `_`, or alone); `before`
    is what precedes the keyword, reversed."""
    pattern = _SHORT_NAME_BEFORE if keyword in (b"pass", b"pwd") else _NAME_BEFORE
    return pattern.match(before) is not None


_WORD_OR_DASH = frozenset(bytes([c]) for c in b"abcdefghijklmnopqrstuvwxyz0123456789_-")


def _replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out, pos = [], 0
    for start, end in sorted(spans):
        if end <= pos:
            continue
        out.append(text[pos : max(pos, start)])
        out.append(MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def mask_text(text: str) -> str:
    """Hide passwords embedded in URLs like `mysql://user:pw@host`."""
    if "://" not in text:
        return text
    return _replace_spans(text, list(_url_password_spans(text)))


def mask_command(text: str, *, mysql: bool = False) -> str:
    """A command line with the values of URL passwords, `--password=x`/`--password x`, `PGPASSWORD=x`,
    Authorization headers and (in a MySQL client's command line, or with `mysql`) `-px` masked."""
    spans, cut = _spans(text, mysql)
    return _replace_spans(text, [*spans, (cut, len(text))] if cut < len(text) else spans)


def mask_args(args: list[Any], *, mysql: bool = False) -> list[Any]:
    """An argument list (`execute`'s params.args) masked like a command line: also `["--password", "x"]`."""
    mysql = mysql or any(_runs_mysql(a) for a in args)
    out: list[Any] = []
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            out.append(arg)
        elif i > 0 and _secret_flag_before(args, i):
            out.append(MASK if arg else arg)
        else:
            out.append(mask_command(arg, mysql=mysql))
    return out


def _secret_flag_before(args: list[Any], i: int) -> bool:
    prev, arg = args[i - 1], args[i]
    return (
        isinstance(prev, str)
        and len(prev) <= 64
        and _FLAG_ALONE.fullmatch(prev) is not None
        and not arg.startswith("-")
    )


def secret_keys_of(params: Any) -> frozenset[str]:
    """The key names a task lists in `params.secret_keys` (their values in params and env are secrets)."""
    keys = params.get("secret_keys") if isinstance(params, dict) else None
    if not isinstance(keys, list):
        return frozenset()
    return frozenset(k for k in keys if isinstance(k, str) and k)


def _is_secret(key: Any, extra: frozenset[str]) -> bool:
    return isinstance(key, str) and (key in extra or is_secret_key(key))


def rebuild(
    value: Any,
    leaf: Callable[[str], str],
    entry: Callable[[Any, Any, Callable[[Any], Any]], tuple[Any, Any]],
    items: Callable[[Any, Callable[[Any], Any]], Iterable[Any]],
) -> Any:
    """A copy of a JSON-like value, iteratively (no nesting depth can exhaust the stack): strings go
    through `leaf`, each dict item through `entry(key, value, convert) -> (key, new value)`, each list or
    tuple through `items(seq, convert) -> new items`; `convert` copies a nested value the same way."""
    pending: list[tuple[Any, Any]] = []

    def convert(v: Any) -> Any:
        if isinstance(v, str):
            return leaf(v)
        if isinstance(v, dict | list | tuple):
            new: Any = {} if isinstance(v, dict) else []
            pending.append((v, new))
            return new
        return v

    out = convert(value)
    while pending:
        src, dst = pending.pop()
        if isinstance(src, dict):
            dst.update(entry(k, v, convert) for k, v in src.items())
        else:
            dst.extend(items(src, convert))
    return out


def mask_secrets(value: Any, extra_keys: frozenset[str] = frozenset(), *, mysql: bool = False) -> Any:
    """A copy of `value` (params or env) with every secret-named key's value (and those of `extra_keys`)
    replaced by `******`, and command-line shapes masked in its strings and argument lists. Iterative:
    a stored row is readable however deep it nests."""

    def entry(k: Any, v: Any, convert: Callable[[Any], Any]) -> tuple[Any, Any]:
        return k, MASK if _is_secret(k, extra_keys) and v not in (None, "") else convert(v)

    def items(seq: Any, convert: Callable[[Any], Any]) -> Iterable[Any]:
        return (v if isinstance(v, str) else convert(v) for v in mask_args(seq, mysql=mysql))

    return rebuild(value, lambda text: mask_command(text, mysql=mysql), entry, items)


def mentions_mysql(command: str, params: Any) -> bool:
    """Whether a task runs a MySQL client (`-px` is then a password): in its command or `params.cmd`."""
    cmd = params.get("cmd") if isinstance(params, dict) else None
    return any(_runs_mysql(t) for t in (command, cmd))


def _runs_mysql(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    low = text.lower()
    return "mysql" in low or "mariadb" in low


def command_secrets(text: str, *, mysql: bool = False) -> list[str]:
    """The secret values a command line (or any string of params/env) carries, as mask_command finds them."""
    return [text[start:end] for start, end in _spans(text, mysql)[0]]


def args_secrets(args: list[Any], *, mysql: bool = False) -> list[str]:
    """The secret values of an argument list: each string's own, and the value after a secret flag."""
    mysql = mysql or any(_runs_mysql(a) for a in args)
    out: list[str] = []
    for i, arg in enumerate(args):
        if isinstance(arg, str):
            if i > 0 and _secret_flag_before(args, i):
                out.append(arg)
            else:
                out.extend(command_secrets(arg, mysql=mysql))
    return out
