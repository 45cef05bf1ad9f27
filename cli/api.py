"""The CLI's HTTP client: where the cloud is, with which token, and what each failure means for the user.

Every failure a user can cause or fix (no token, a refused token, a cloud that is down, a bad URL) becomes
a `CliError` with one line saying what to do and its exit code; only a bug shows a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import quote

import typer

from cli.exitcodes import CliError, Code
from cli.output import emit

DEFAULT_URL = "http://127.0.0.1:8080"

UrlOpt = Annotated[
    str,
    typer.Option(
        "--url",
        "--server",
        envvar=["TIANGONG_URL", "TIANGONG_SERVER"],
        help="The cloud's URL (TIANGONG_URL).",
        show_default=True,
    ),
]
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token",
        envvar=["TIANGONG_TOKEN", "TIANGONG_ADMIN_TOKEN"],
        help="An API token (tgp_...) or the admin token (TIANGONG_TOKEN).",
        show_default=False,
    ),
]


def _reason(exc: Exception) -> str:
    """`[Errno 111] Connection refused` -> `connection refused`: the part a person reads."""
    text = str(exc) or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text.split("\n")[-1])
    return text[:1].lower() + text[1:]


def check_url(url: str) -> str:
    """The URL without a trailing slash; a usage error when it cannot be a cloud's address."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise CliError(
            f"invalid URL {url!r}: {exc}; expected e.g. http://cloud:8080 (TIANGONG_URL)", Code.USAGE
        ) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(
            f"invalid URL {url!r}: expected http:// or https:// and a host, e.g. http://cloud:8080 (TIANGONG_URL)",
            Code.USAGE,
        )
    return url.rstrip("/")


def endpoint(template: str, *ids: object) -> str:
    """`endpoint("/api/v1/tasks/{}/cancel", task_id)`: each id one percent-encoded path segment. An id typed
    as `../agents/web-1` would otherwise be a path httpx resolves to another resource (a `files delete`
    deleting an agent); `?`, `#` and `/` inside an id would cut the path short."""
    segments = []
    for value in ids:
        text = str(value)
        if text in ("", ".", ".."):
            raise CliError(f"{text!r} is not an id", Code.USAGE)
        segments.append(quote(text, safe=""))
    return template.format(*segments)


def delete_record(url: str, token: str, path: str, record_id: object, done: str) -> None:
    """DELETE `path`; print `done` (with --json `{"id": record_id, "deleted": true}`)."""
    with Api(url, token) as api:
        api.request("DELETE", path)
    emit({"id": record_id, "deleted": True}, lambda: print(done))


def check_token(token: str) -> str:
    token = token.strip()
    if not token:
        raise CliError("no token: set TIANGONG_TOKEN or pass --token", Code.AUTH)
    if not token.isprintable() or not token.isascii():
        raise CliError("the token has characters an HTTP header cannot carry: check TIANGONG_TOKEN", Code.AUTH)
    return token


class Api:
    """An httpx client for the cloud whose every failure is a CliError; use it as a context manager."""

    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        import httpx

        self.url = check_url(url)
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {check_token(token)}"},
            timeout=httpx.Timeout(timeout, connect=10),
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    @contextmanager
    def _transport(self) -> Iterator[None]:
        """Network failures as CliErrors naming the URL and what to check."""
        import httpx

        try:
            yield
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the cloud at {self.url}: {_reason(exc)}; is it running? (TIANGONG_URL)", Code.UNREACHABLE
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(
                f"the cloud at {self.url} did not answer in time ({_reason(exc)})", Code.UNREACHABLE
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise CliError(f"invalid URL {self.url!r}: {_reason(exc)} (TIANGONG_URL)", Code.USAGE) from exc
        except httpx.TransportError as exc:
            raise CliError(f"lost the connection to the cloud at {self.url}: {_reason(exc)}", Code.UNREACHABLE) from exc

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; the decoded JSON body (None when empty), or a CliError."""
        with self._transport():
            resp = self.http.request(method, path, **kwargs)
        self.raise_for(resp)
        return self.decode(resp) if resp.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        """A streamed response (already checked for errors); network failures while reading it too."""
        with self._transport(), self.http.stream(method, path, **kwargs) as resp:
            if resp.status_code >= 400:
                resp.read()
                self.raise_for(resp)
            yield resp

    def decode(self, resp: Any) -> Any:
        try:
            return resp.json()
        except ValueError as exc:
            kind = resp.headers.get("content-type", "no content type")
            raise CliError(
                f"{self.url} answered HTTP {resp.status_code} ({kind}), not Tiangong's API: check TIANGONG_URL",
                Code.REFUSED,
            ) from exc

    def raise_for(self, resp: Any) -> None:
        """A CliError for an error status, with the cloud's own `{"error": ...}` message."""
        status = resp.status_code
        if status < 400:
            return
        body: Any = None
        try:
            body = resp.json()
            msg = str(body.get("error", body)) if isinstance(body, dict) else str(body)
        except ValueError:
            msg = resp.text.strip()[:200] or resp.reason_phrase
        if status == 401:
            raise CliError(f"the cloud refused the token ({status}: {msg}): check TIANGONG_TOKEN", Code.AUTH)
        if status == 403:
            raise CliError(f"not allowed ({status}): {msg}", Code.AUTH)
        if status == 404:
            raise CliError(f"{msg} (404)", Code.NOT_FOUND)
        if status in (502, 503, 504):
            raise CliError(f"the cloud at {self.url} is unavailable ({status}: {msg})", Code.UNREACHABLE)
        extra = {k: v for k, v in body.items() if k != "error"} if isinstance(body, dict) else {}
        raise CliError(f"HTTP {status}: {msg}", Code.REFUSED, **extra)
