"""The secret values a task was given, and masking them wherever they show up in its output (log lines,
result, error, data): on the agent as the output is produced, and again on the cloud when it is stored.

What counts as a secret value: anything under a secret-named key of params or env (`is_secret_key`), the
values of the keys named in `params.secret_keys`, the credentials of an `Authorization` value, URL
passwords, and the values of `--password=x`, `--password x`, `PGPASSWORD=x` and (for a MySQL client)
`-px` in the command, `params.args` and other strings. Values shorter than MIN_SECRET_CHARS, and values
that are themselves a word like `password` or `token`, are not masked in output: they would blank out
ordinary text (`Wrong password` once became `Wrong ******`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from wire.secrets import (
    MASK,
    args_secrets,
    command_secrets,
    is_secret_key,
    mask_text,
    mentions_mysql,
    rebuild,
    secret_keys_of,
)

MIN_SECRET_CHARS = 4
"""Shorter values are not masked in output: `abc` would blank out every word that contains it."""
MAX_SECRETS = 256
"""Distinct values masked per task (the longest first). Masking costs one pass over the output per
value, so the bound keeps a task with thousands of secret values from exhausting the agent or cloud."""
_WORDS = re.compile(
    r"pass(?:word|wd|phrase)?|pwd|secret|token|api[-_ ]?key|auth(?:orization)?|credentials?|cookie|bearer|basic"
    r"|private[-_ ]?key|access[-_ ]?key|changeme|\*+",
    re.I,
)
"""Values that are words of ordinary text: masking them would hide messages, not secrets."""
_SCHEMES = re.compile(r"(?P<scheme>[A-Za-z][\w-]{0,20})[ \t]+(?P<cred>\S+)")


def _leaves(value: Any) -> Iterable[str]:
    """Every string (and number) inside a secret value: a secret-named key may hold an object."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            yield str(v)


def _credentials(value: str) -> list[str]:
    """`Bearer xyz` -> `xyz`; `Basic <base64 of user:pw>` -> the base64 and `pw`."""
    m = _SCHEMES.fullmatch(value.strip())
    if m is None:
        return []
    cred = m["cred"]
    out = [cred]
    if m["scheme"].lower() == "basic":
        try:
            decoded = base64.b64decode(cred, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return out
        out.append(decoded.partition(":")[2])
    return out


def _collect(value: Any, extra: frozenset[str], mysql: bool, out: list[str]) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for key, item in v.items():
                if isinstance(key, str) and (key in extra or is_secret_key(key)):
                    for leaf in _leaves(item):
                        out.append(leaf)
                        out.extend(_credentials(leaf))
                else:
                    stack.append(item)
        elif isinstance(v, list):
            out.extend(args_secrets(v, mysql=mysql))
            stack.extend(item for item in v if not isinstance(item, str))
        elif isinstance(v, str):
            out.extend(command_secrets(v, mysql=mysql))


def task_secrets(params: Any, env: Any, command: str = "") -> list[str]:
    """The secret values a task was given (in params, env and its command), ready to mask."""
    extra = secret_keys_of(params)
    mysql = mentions_mysql(command, params)
    found: list[str] = []
    _collect(params, extra, mysql, found)
    _collect(env, extra, mysql, found)
    found.extend(command_secrets(command, mysql=mysql))
    return usable(found)


def usable(values: Iterable[str]) -> list[str]:
    """The values worth masking, with the forms they take in URLs and JSON, longest first, at most
    MAX_SECRETS. A multi-line value (a key file) is masked line by line, as output is logged."""
    seen: set[str] = set()
    for value in values:
        lines = [ln.strip() for ln in value.split("\n")] if "\n" in value else [value]
        for line in lines:
            if len(line) < MIN_SECRET_CHARS or _WORDS.fullmatch(line.strip()):
                continue
            seen.add(line)
            seen.add(quote(line, safe=""))  # as a URL or a form body carries it
            seen.add(json.dumps(line, ensure_ascii=False)[1:-1])  # as JSON output carries it
    return sorted(seen, key=lambda s: (-len(s), s))[:MAX_SECRETS]


class Masker:
    """Replaces a task's secret values, and URL passwords, with `******` in text."""

    def __init__(self, secrets: tuple[str, ...] = (), *, task: tuple[Any, Any, str] | None = None) -> None:
        """`secrets` as usable() returns them; or, given `task` (params, env, command), found at first use."""
        self._task = task
        if task is None:
            self.secrets = secrets

    @functools.cached_property
    def secrets(self) -> tuple[str, ...]:
        """The values masked, as usable() returns them (a lazy masker finds them here, once)."""
        params, env, command = self._task or ({}, {}, "")
        self._task = None
        return tuple(task_secrets(params, env, command))

    @functools.cached_property
    def holdback(self) -> int:
        """Characters to hold back at the end of a piece of a longer line, so that a secret the split
        cut in two is masked once the next piece arrives."""
        return max((len(s) for s in self.secrets), default=1) - 1

    @classmethod
    def of(cls, values: Iterable[str]) -> Masker:
        """The masker of some secret values."""
        return cls(tuple(usable(values)))

    @classmethod
    def for_task(cls, params: Any, env: Any, command: str = "") -> Masker:
        """The masker of a task's output."""
        return cls(tuple(task_secrets(params, env, command)))

    @classmethod
    def for_task_later(cls, params: Any, env: Any, command: str = "") -> Masker:
        """The masker of a task's output, its secrets found when it first masks something: most tasks that
        succeed print little or nothing, and finding them was a thirtieth of an agent's CPU per task. For
        the holder of the task itself (the agent), which keeps `params` and `env` unchanged meanwhile: no
        executor changes a task's params or env in place (executors.base.Executor.run says so)."""
        return cls(task=(params, env, command))

    def text(self, text: str) -> str:
        """`text` with every secret value masked: one C-speed pass per value, so linear in its length."""
        if not text:
            return text
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return mask_text(text)

    def lines(self, messages: list[str]) -> list[str]:
        """Several log lines masked at once (one pass over their joined text per value)."""
        if len(messages) < 2:
            return [self.text(m) for m in messages]
        joined = "\n".join(messages)
        if joined.count("\n") != len(messages) - 1:  # a message holds a newline: it cannot be told apart
            return [self.text(m) for m in messages]
        # No secret holds a newline (usable() splits them), so none can span two lines.
        return self.text(joined).split("\n")

    def value(self, value: Any) -> Any:
        """A JSON-like value (`data`) with every string in it, keys included, masked."""
        return map_strings(value, self.text)


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """A copy of a JSON-like value with `fn` applied to every string, keys included (iterative)."""

    def entry(k: Any, v: Any, convert: Callable[[Any], Any]) -> tuple[Any, Any]:
        return fn(k) if isinstance(k, str) else k, convert(v)

    return rebuild(value, fn, entry, lambda seq, convert: [convert(item) for item in seq])
