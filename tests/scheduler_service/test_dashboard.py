"""The dashboard's static files: served by the scheduler itself, offline, mounted once."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings
from scheduler_service.dashboard import DASHBOARD_PATH, STATIC_DIR, mount_dashboard

pytestmark = pytest.mark.anyio

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
"""An XML namespace name: an identifier, never fetched."""


async def test_root_redirects_to_the_dashboard_which_serves_its_modules(sqlite_url: str) -> None:
    app = create_app(Settings(database_url=sqlite_url))
    mount_dashboard(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client:
        root = await client.get("/")
        assert root.status_code == 307
        assert root.headers["location"] == f"{DASHBOARD_PATH}/"
        page = await client.get(f"{DASHBOARD_PATH}/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        modules = re.findall(r'src="([^"]+\.js)"', page.text)
        assert modules == ["app.js"]
        for name in ("app.js", "api.js", "chart.js", "model.js"):
            script = await client.get(f"{DASHBOARD_PATH}/{name}")
            assert script.status_code == 200
            assert "javascript" in script.headers["content-type"]
        assert (await client.get(f"{DASHBOARD_PATH}/style.css")).status_code == 200


def test_dashboard_files_reference_no_remote_host() -> None:
    files = [p for p in STATIC_DIR.iterdir() if p.suffix in {".html", ".js", ".css"}]
    assert {p.name for p in files} >= {"index.html", "app.js", "style.css"}
    for path in files:
        text = path.read_text().replace(SVG_NAMESPACE, "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), path.name
        assert "@import" not in text, path.name


def test_mounting_the_dashboard_twice_adds_it_once() -> None:
    app = FastAPI()
    mount_dashboard(app)
    mount_dashboard(app)
    assert [getattr(r, "path", None) for r in app.routes].count(DASHBOARD_PATH) == 1
