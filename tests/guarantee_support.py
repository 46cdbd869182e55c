"""Support of the guarantee tests: their report line and a ``clipsched serve`` starter.

``record_guarantee`` prints one ``GUARANTEE <n>:`` line to stdout (seen with
``pytest -s``) and appends a JSON line to ``test-artifacts/guarantees.jsonl`` at the
repository root, which docs/guarantees.md quotes.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from tests.service_processes import VENV_BIN, Process, base_env, wait_healthy

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
"""Where the guarantee figures are appended."""


def record_guarantee(number: int, summary: str, **figures: Any) -> None:
    """Print ``GUARANTEE <number>: <summary>`` and append the figures as one JSON line."""
    sys.stdout.write(f"\nGUARANTEE {number}: {summary}\n")
    sys.stdout.flush()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    line = {
        "guarantee": number,
        "summary": summary,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **figures,
    }
    with (ARTIFACTS / "guarantees.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")


def start_scheduler(
    name: str, database: Path, port: int, work: Path, extra_env: dict[str, str] | None = None
) -> Process:
    """A ``clipsched serve`` process on loopback ``port`` over the SQLite file ``database``,
    healthy when returned (stop it by PID with ``Process.stop``)."""
    env = base_env(
        work,
        {
            "CLIPSCHED_DATABASE_URL": str(database),
            "CLIPSCHED_HOST": "127.0.0.1",
            "CLIPSCHED_PORT": str(port),
            "CLIPSCHED_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        },
    )
    process = Process(name, [str(VENV_BIN / "clipsched"), "serve"], env, work)
    wait_healthy(process, f"http://127.0.0.1:{port}")
    return process
