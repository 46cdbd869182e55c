"""Test helpers that run real processes on loopback: schedulers, learners, a fresh PG schema.

Every process is started by us, logs to a file, and is stopped by its PID (SIGTERM, then
SIGKILL after a grace period); nothing here touches processes it did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ENV = "CLIPSCHED_TEST_POSTGRES_URL"
"""The PostgreSQL the PostgreSQL tests use (each creates and drops its own schema)."""

VENV_BIN = Path(sys.executable).parent
"""Where ``python`` and the ``clipsched`` console script of this environment live."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean process environment: this venv first on PATH, a temp HOME, nothing inherited
    that could change a setting (no ``CLIPSCHED_*`` of the caller)."""
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.update(extra or {})
    return env


class Process:
    """One child process with its output in a log file; stopped by PID."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=log_dir,
            )

    @property
    def pid(self) -> int:
        """The child's PID."""
        return self.popen.pid

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's output (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait(self, timeout: float) -> int:
        """The exit code; fails the test (with the log) if it runs past ``timeout``."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} still running after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM this PID, SIGKILL it after ``grace`` seconds."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=grace)


def wait_healthy(process: Process, url: str, timeout: float = 30.0) -> None:
    """Poll ``GET {url}/health`` until it answers 200; fails the test if the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.popen.poll() is not None:
            pytest.fail(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            process.stop()
            pytest.fail(f"{process.name} not healthy after {timeout:.0f}s:\n{process.log_tail()}")
        time.sleep(0.05)


@contextlib.contextmanager
def stopping(processes: list[Process]) -> Iterator[list[Process]]:
    """Stop every process of the (growing) list on the way out, newest first."""
    try:
        yield processes
    finally:
        for process in reversed(processes):
            process.stop()


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL of the test PostgreSQL whose connections use a fresh schema, dropped afterwards.

    Skips the test when ``CLIPSCHED_TEST_POSTGRES_URL`` is unset.
    """
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    schema = f"clipsched_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
