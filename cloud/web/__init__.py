"""The web UI: plain HTML, CSS and JavaScript modules served by the cloud, the page at `/`, assets under `/ui/`.

Nothing is built or fetched from elsewhere: the files in `static/` are the UI. It calls the same REST API as
any client, with the token the user typed (kept in the tab's sessionStorage, sent as a bearer header).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

# Task names, log lines and labels are attacker-controlled: the UI renders them as text, and this policy
# makes any markup that slipped through inert (no inline script, no other origin, no framing).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The asset names carry no version, so the browser revalidates each (a 304 by ETag) and never runs an old
# script against a new API after an upgrade.
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class _Assets(StaticFiles):
    """The UI's files with the headers above (Starlette's StaticFiles adds the ETag and answers 304)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def install_web_ui(app: FastAPI) -> None:
    """Serve the UI: its page at `/`, its assets under `/ui/` (neither is part of the API's schema)."""

    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=HEADERS)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/ui", _Assets(directory=STATIC), name="ui")
