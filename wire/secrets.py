"""Masking of secrets inside task params and env before they leave the cloud or reach a log."""

from __future__ import annotations

import re
from typing import Any

MASK = "******"

_SECRET_KEY = re.compile(
    r"pass(word|wd)?|pwd|secret|token|api[-_]?key|auth|credential|private[-_]?key|access[-_]?key|cookie",
    re.IGNORECASE,
)
# user:password@ inside URLs and DSNs given as plain strings.
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<post>@)", re.I)


def is_secret_key(key: str) -> bool:
    """Whether a params/env key names a secret (password, token, Authorization header...)."""
    return bool(_SECRET_KEY.search(key))


def mask_text(text: str) -> str:
    """Hide passwords embedded in URLs like `mysql://user:pw@host`."""
    return _URL_PASSWORD.sub(lambda m: f"{m['pre']}{MASK}{m['post']}", text)


def mask_secrets(value: Any) -> Any:
    """A copy of `value` with every secret-named key's value replaced by `******`."""
    if isinstance(value, dict):
        return {
            k: (MASK if is_secret_key(str(k)) and v not in (None, "") else mask_secrets(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
