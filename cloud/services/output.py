"""What an agent sends, made fit to store: the task's secrets masked again (an old or faulty agent may
not have), NUL characters replaced (PostgreSQL refuses them), and the output caps enforced.

Masking is done once, here, when output is stored, never on a read. The masker of an attempt is built
from the task's unsealed params, env and command when it is claimed, and kept (bounded) by its token;
another replica, or a cache that dropped it, reads the task again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson
from sqlalchemy import Connection, select

from cloud.db.models import TASKS as T
from cloud.sealing import Sealer, Unsealable
from wire.masker import Masker, map_strings
from wire.output import cut_middle, storable, utf8_len
from wire.tasks import LogLine, TaskReport, parse_task_id

RESULT_SLACK_BYTES = 4096
"""A result may pass max_log_bytes by this much before the cloud cuts it: an agent keeps max_log_bytes of
output plus its own marker line, and that must reach the caller as the agent sent it."""
ERROR_MAX_BYTES = 64 * 1024
"""An error is a line or two; a longer one is cut around a marker (it is shown in every task list)."""
OFFLOAD_CHARS = 256 * 1024
"""Output larger than this is cleaned in a worker thread rather than on the event loop."""
_CACHE_SIZE = 2048
_CACHE_MAX_SECRET_CHARS = 16 * 1024
"""A masker holding more secret text than this is not kept (it is rebuilt from the task when needed)."""


class _Maskers:
    """Maskers of running attempts by task token, least recently used dropped first."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Masker] = OrderedDict()

    def put(self, token: str, masker: Masker) -> None:
        if sum(len(s) for s in masker.secrets) > _CACHE_MAX_SECRET_CHARS:
            return
        self._items[token] = masker
        self._items.move_to_end(token)
        while len(self._items) > _CACHE_SIZE:
            self._items.popitem(last=False)

    def get(self, token: str) -> Masker | None:
        masker = self._items.get(token)
        if masker is not None:
            self._items.move_to_end(token)
        return masker

    def forget(self, token: str) -> None:
        self._items.pop(token, None)


_MASKERS = _Maskers()


def remember(token: str, params: Any, env: Any, command: str) -> None:
    """Keep the masker of an attempt just handed out (its params and env as the agent gets them)."""
    _MASKERS.put(token, Masker.for_task(params, env, command))


def forget(token: str | None) -> None:
    """The attempt is over: its masker is not needed any more."""
    if token:
        _MASKERS.forget(token)


def kept_masker(token: str) -> Masker | None:
    """The masker kept from the claim of the attempt holding `token`, if this process still has it."""
    return _MASKERS.get(token)


def masker_for(conn: Connection, task_id: str, token: str, sealer: Sealer) -> Masker:
    """The masker of the attempt holding `token`, built from the task (and kept). An unknown task or a
    stale token gets the plain masker (URL passwords only): the request is refused anyway."""
    n = parse_task_id(task_id)
    query = select(T.c.params, T.c.env, T.c.command, T.c.task_token).where(T.c.id == n)
    row = None if n is None else conn.execute(query).first()
    if row is None or row.task_token != token:
        return Masker()
    try:
        masker = Masker.for_task(sealer.unseal(row.params), sealer.unseal(row.env), row.command)
    except Unsealable:
        masker = Masker.for_task(row.params, row.env, row.command)  # the clear values, at least
    _MASKERS.put(token, masker)
    return masker


def clean_lines(lines: list[LogLine], masker: Masker) -> list[LogLine]:
    """Log lines (and runs of them) with the task's secrets masked and NUL characters replaced: the
    messages of the whole batch in one pass per secret."""
    flat = [m for ln in lines for m in ln.messages()] if any(ln.more for ln in lines) else [ln.message for ln in lines]
    cleaned = masker.lines(flat)
    if "\x00" in "".join(cleaned):
        cleaned = [storable(m) for m in cleaned]
    if cleaned == flat:
        return lines  # the usual case: nothing to mask, nothing copied
    out: list[LogLine] = []
    at = 0
    for ln in lines:
        n = ln.count
        first, more = cleaned[at], cleaned[at + 1 : at + n]
        at += n
        if first != ln.message or (ln.more and more != ln.more):
            ln = ln.model_copy(update={"message": first, "more": more or None})
        out.append(ln)
    return out


def clean_report(report: TaskReport, masker: Masker, max_log_bytes: int) -> TaskReport:
    """A result as it may be stored: secrets masked (before any cut, so no part of one survives it), NUL
    characters replaced, the result cut to max_log_bytes and the error to ERROR_MAX_BYTES."""

    def clean(text: str) -> str:
        return storable(masker.text(text))

    result = clean(report.result)
    if utf8_len(result) > max_log_bytes + RESULT_SLACK_BYTES:
        result = cut_middle(result, max_log_bytes)
    return report.model_copy(
        update={
            "result": result,
            "error": cut_middle(clean(report.error), ERROR_MAX_BYTES),
            "data": _capped_data(map_strings(report.data, clean), max_log_bytes),
            "lines": clean_lines(report.lines, masker),
        }
    )


def _capped_data(data: Any, max_log_bytes: int) -> Any:
    """`data` as stored: within max_log_bytes once encoded, else a marker saying how large it was (it is
    returned whole in every read of the task, so it gets the same cap as the output)."""
    if data is None or _rough_size(data) <= max_log_bytes // 2:
        return data
    size = len(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
    if size <= max_log_bytes:
        return data
    return {"truncated": True, "bytes": size, "reason": f"data larger than the {max_log_bytes}-byte output cap"}


def output_chars(lines: list[LogLine], report: TaskReport | None = None) -> int:
    """Roughly how much text cleaning will go over (to decide whether to leave the event loop for it)."""
    size = sum(len(ln.message) + (sum(map(len, ln.more)) if ln.more else 0) for ln in lines)
    if report is not None:
        size += len(report.result) + len(report.error) + (0 if report.data is None else _rough_size(report.data))
    return size


def _rough_size(value: Any) -> int:
    # Iterative, like map_strings: the data may be nested as deep as the cloud accepts.
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, dict):
            total += sum(len(k) for k in v if isinstance(k, str))
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return total
