"""`params` of `api` and `http_request`: pydantic models whose messages name the field."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from executors.base import strict_flag

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
_IP_AUTO = {"ipv4 auto": "0.0.0.0", "ipv6 auto": "::"}


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("params.url: url is required in params")
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("params.url: must start with http:// or https://")
    return value


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("params.headers: must be an object of string values")
    return value


def _expected(value: Any) -> list[int] | None:
    if value is not None and not (
        isinstance(value, list) and value and all(isinstance(c, int) and 100 <= c <= 599 for c in value)
    ):
        raise ValueError("params.expected_status: must be a list of HTTP status codes")
    return value


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("params.max_body_bytes: must be a number of bytes >= 0")
    return value


def _ip(value: Any) -> Any:
    local_address(value)
    return value


class HttpParams(BaseModel):
    """What `api` and `http_request` share."""

    model_config = ConfigDict(extra="allow")

    url: Annotated[str, BeforeValidator(_url)] = Field(None, validate_default=True, description="http(s) URL.")
    headers: Annotated[dict[str, str], BeforeValidator(_headers)] = Field(default_factory=dict)
    verify_tls: Annotated[bool, BeforeValidator(strict_flag("verify_tls"))] = True
    follow_redirects: Annotated[bool, BeforeValidator(strict_flag("follow_redirects"))] = True
    expected_status: Annotated[list[int] | None, BeforeValidator(_expected)] = None
    max_body_bytes: Annotated[int, BeforeValidator(_limit)] = DEFAULT_MAX_BODY_BYTES
    ip: Annotated[Any, BeforeValidator(_ip)] = Field(None, description='"ipv4 auto", "ipv6 auto" or a source IP.')


class ApiParams(HttpParams):
    """`api`: `body` is a string sent as is, or JSON."""

    body: Any = None


def _body_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("params.body: must be a string (use body_base64 for binary data)")
    return value


def _base64(value: Any) -> str:
    try:
        base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("params.body_base64: is not valid base64") from None
    return str(value)


def _method(value: Any) -> str:
    if not isinstance(value, str) or not value.strip().isalpha():
        raise ValueError("params.method: must be an HTTP method such as GET or POST")
    return value


class HttpRequestParams(HttpParams):
    """`http_request` (seed 000): a method, and a body as text or as base64."""

    method: Annotated[str, BeforeValidator(_method)] = "GET"
    body: Annotated[str | None, BeforeValidator(_body_text)] = None
    body_base64: Annotated[str | None, BeforeValidator(_base64)] = None

    @model_validator(mode="before")
    @classmethod
    def _one_body(cls, data: Any) -> Any:
        if isinstance(data, dict) and "body" in data and "body_base64" in data:
            raise ValueError("params.body_base64: body and body_base64 are exclusive; give one")
        return data


def local_address(ip: Any) -> str | None:
    """`ip`: "ipv4 auto", "ipv6 auto", or a literal source address; raises ValueError naming the field."""
    if ip in (None, ""):
        return None
    if isinstance(ip, str) and ip.lower() in _IP_AUTO:
        return _IP_AUTO[ip.lower()]
    try:
        return str(ipaddress.ip_address(str(ip)))
    except ValueError:
        raise ValueError('params.ip: must be "ipv4 auto", "ipv6 auto" or an IP address') from None
