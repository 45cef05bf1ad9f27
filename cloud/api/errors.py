"""Every error leaves as `{"error": "..."}` with 400/401/404/409; validation failures become 400; an
unreachable database is 503."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.services.errors import ServiceError
from files.store import TooLarge

log = logging.getLogger("tiangong.cloud")


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or "body"
    if err.get("type") == "json_invalid":
        return f"body: invalid JSON ({err.get('ctx', {}).get('error', 'cannot parse')})"
    if err.get("type") == "model_attributes_type" or (err.get("type") == "dict_type" and not loc):
        return "body: must be a JSON object"
    if err.get("type") == "missing":
        return f"{field}: is required"
    if err.get("type") == "extra_forbidden":
        return f"{field}: unknown field"
    return f"{field}: {err.get('msg', 'invalid value')}"


def validation_message(exc: RequestValidationError) -> str:
    """One line naming each bad field, e.g. `timeout: Input should be less than or equal to 300`."""
    return "; ".join(_describe(dict(e)) for e in exc.errors()[:5])


def describe_validation(exc: ValidationError) -> str:
    """The same one-line description for a pydantic model validated by hand."""
    return "; ".join(_describe(dict(e)) for e in exc.errors()[:5])


def install_error_handlers(app: FastAPI) -> None:
    """Replace FastAPI's default error shapes with ours."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(exc)}, status_code=400)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status_code)

    @app.exception_handler(TooLarge)
    async def _too_large(_: Request, exc: TooLarge) -> JSONResponse:
        # The client may still be sending; close the connection rather than read the rest.
        return JSONResponse({"error": str(exc)}, status_code=413, headers={"Connection": "close"})

    @app.exception_handler(OperationalError)
    async def _database_away(_: Request, exc: OperationalError) -> JSONResponse:
        # The database is unreachable or restarting: callers and agents retry. No statement or
        # parameter goes out (hide_parameters keeps them out of the message; we send only the class).
        log.warning("database unavailable: %s", type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return JSONResponse(
            {"error": "database unavailable; try again shortly"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug of ours, never the caller's: log it whole, answer without internals.
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the cloud's log"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)
