"""The operator dashboard: static files served by the scheduler itself at ``/dashboard/``.

Plain HTML, CSS and ES modules shipped as package data (``static/dashboard``): nothing is
built, vendored or fetched from a CDN, so the page works offline. It reads only the public
REST API (runs, run state with its alarms, history, audit) by polling and sets targets
through ``PUT /runs/{run}/targets`` with ``If-Match``. The page itself holds no data, so
it is served without a token; the API calls it makes carry the token the operator enters.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

DASHBOARD_PATH = "/dashboard"
"""Where the dashboard is mounted."""

STATIC_DIR = Path(__file__).resolve().parent / "static" / "dashboard"
"""The dashboard's files (package data)."""


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/dashboard/`` and redirect ``/`` there (once per app)."""
    if any(getattr(route, "path", None) == DASHBOARD_PATH for route in app.routes):
        return
    app.mount(
        DASHBOARD_PATH,
        StaticFiles(directory=STATIC_DIR, html=True),
        name="dashboard",
    )

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{DASHBOARD_PATH}/")
