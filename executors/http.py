"""`api` (seed 004) and `http_request` (seed 000): one HTTP request made from the agent with httpx."""

from __future__ import annotations

import asyncio
import base64
import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from executors.base import BaseExecutor, Outcome, RunContext, Stopped, until_stopped
from executors.http_params import DEFAULT_MAX_BODY_BYTES, ApiParams, HttpRequestParams, local_address
from wire.secrets import mask_text
from wire.tasks import Assignment, TaskRequest, TaskStatus


class _HttpExecutor(BaseExecutor, ABC):
    """Shared run: the request, the capped body, the seed's text result and the structured data."""

    default_exec_timeout: ClassVar[int] = 30
    headers_as_pairs: ClassVar[bool] = False

    @abstractmethod
    def request_parts(self, task: Assignment) -> tuple[str, bytes | None, dict[str, str]]:
        """(method, body bytes, extra headers) from the task."""

    async def run(self, task: Assignment, ctx: RunContext) -> Outcome:
        import httpx  # the agent's driver; the cloud only validates

        p = task.params
        method, content, extra_headers = self.request_parts(task)
        headers = {**extra_headers, **p.get("headers", {})}
        loop = asyncio.get_running_loop()
        timeout = max(0.1, ctx.deadline - loop.time())
        transport = httpx.AsyncHTTPTransport(local_address=local_address(p.get("ip")), verify=p.get("verify_tls", True))
        ctx.log(f"{method} {mask_text(p['url'])}")
        limit = int(p.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES))
        try:
            async with httpx.AsyncClient(
                transport=transport, follow_redirects=p.get("follow_redirects", True), timeout=timeout
            ) as client:
                request = client.build_request(method, p["url"], headers=headers, content=content)
                response, body, truncated = await until_stopped(ctx, self._fetch(client, request, limit))
        except Stopped as stop:
            if stop.reason == "canceled":
                return Outcome(TaskStatus.canceled, error="canceled")
            return self._timed_out(task)
        except httpx.TimeoutException:
            return self._timed_out(task)
        except httpx.ConnectError as exc:
            kind = "TLS error" if "SSL" in str(exc) or "certificate" in str(exc).lower() else "cannot connect"
            return Outcome(TaskStatus.failed, error=f"{kind}: {mask_text(p['url'])}: {exc}")
        except (httpx.HTTPError, OSError) as exc:
            return Outcome(TaskStatus.failed, error=f"request failed: {type(exc).__name__}: {exc}")
        return self._outcome(response, body, truncated, p.get("expected_status"), ctx)

    @staticmethod
    def _timed_out(task: Assignment) -> Outcome:
        return Outcome(TaskStatus.timeout, error=f"execution timed out after {task.exec_timeout} s (HTTP request)")

    @staticmethod
    async def _fetch(client: Any, request: Any, limit: int) -> tuple[Any, bytes, bool]:
        response = await client.send(request, stream=True)
        body = bytearray()
        truncated = False
        try:
            async for chunk in response.aiter_bytes():
                room = limit - len(body)
                if len(chunk) > room:
                    body += chunk[:room]
                    truncated = True
                    break
                body += chunk
        finally:
            await response.aclose()
        return response, bytes(body), truncated

    def _outcome(
        self, response: Any, body: bytes, truncated: bool, expected: list[int] | None, ctx: RunContext
    ) -> Outcome:
        status = int(response.status_code)
        pairs = [(k, v) for k, v in response.headers.multi_items()]
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        data: dict[str, Any] = {
            "status": status,
            "reason": response.reason_phrase,
            "http_version": response.http_version,
        }
        data["headers"] = [[k, v] for k, v in pairs] if self.headers_as_pairs else _joined(pairs)
        data["body" if text is not None else "body_base64"] = (
            text if text is not None else base64.b64encode(body).decode()
        )
        data["truncated"] = truncated
        shown = text if text is not None else f"<{len(body)} bytes of binary data; see data.body_base64>"
        result = (
            f"Status: {status} {response.reason_phrase} {response.http_version}\nHeaders:\n"
            + "".join(f"  {k}: {v}\n" for k, v in pairs)
            + f"\nBody:\n{shown}"
            + ("\n[tiangong: body cut at the size limit]" if truncated else "")
        )
        ctx.log(f"HTTP {status} {response.reason_phrase} ({len(body)} bytes{', truncated' if truncated else ''})")
        ok = status in expected if expected else 200 <= status < 400
        if ok:
            return Outcome(TaskStatus.success, result=result, data=data)
        return Outcome(TaskStatus.failed, result=result, data=data, error=f"HTTP {status} {response.reason_phrase}")


def _joined(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


class ApiExecutor(_HttpExecutor):
    """`api`: `command` is the method (default GET); `params.body` a string (sent as is) or JSON."""

    type: ClassVar[str] = "api"

    params_model = ApiParams

    def check(self, req: TaskRequest, params: ApiParams) -> None:
        """`command`, when given, is the method."""
        if req.command.strip() and not req.command.strip().isalpha():
            raise ValueError("command: must be an HTTP method such as GET or POST")

    def request_parts(self, task: Assignment) -> tuple[str, bytes | None, dict[str, str]]:
        method = (task.command.strip() or "GET").upper()
        body = task.params.get("body")
        if body is None:
            return method, None, {}
        if isinstance(body, str):
            return method, body.encode(), {}
        return method, json.dumps(body).encode(), {"Content-Type": "application/json"}


class HttpRequestExecutor(_HttpExecutor):
    """`http_request` (seed 000): `params` {url, method, headers, body | body_base64, ip}; duplicate
    response headers are kept as separate pairs."""

    type: ClassVar[str] = "http_request"
    headers_as_pairs: ClassVar[bool] = True

    params_model = HttpRequestParams

    def request_parts(self, task: Assignment) -> tuple[str, bytes | None, dict[str, str]]:
        p = task.params
        method = str(p.get("method") or "GET").upper()
        if "body_base64" in p:
            return method, base64.b64decode(str(p["body_base64"])), {}
        body = p.get("body")
        return method, body.encode() if isinstance(body, str) else None, {}
