"""``serve``: the real server process on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.service_processes import free_port

SERVE = (
    "import sys; from scheduler_service.config import Settings; "
    "from scheduler_service.server import serve; "
    "serve(Settings(database_url=sys.argv[1], port=int(sys.argv[2])))"
)


def test_serve_answers_on_loopback_and_says_why_it_stays_there(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(tmp_path / "served.db"), str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert response.json()["database"] == "sqlite"
    finally:
        process.terminate()
        _, log = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in log
    assert "loopback" in log and "CLIPSCHED_WRITE_TOKEN" in log
