"""The maths package stays free of the web, database and HTTP stacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = ("fastapi", "sqlalchemy", "httpx", "starlette", "pydantic")


def test_importing_algorithms_loads_no_web_database_or_http_module() -> None:
    code = (
        "import sys, scheduler_service.algorithms as a, scheduler_service.algorithms.sampler; "
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == ""
