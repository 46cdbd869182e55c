"""A handled error never costs the connection: after a 500, the next request on the same
keep-alive connection is answered (uvicorn closed it when the error escaped the app)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scheduler_service.config import Settings
from scheduler_service.server import serve_in_thread
from scheduler_service.service import SchedulerService


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request and read one whole answer (by its Content-Length)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_the_connection_survives_a_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: SchedulerService, *args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(SchedulerService, "list_runs", broken)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}")
    with serve_in_thread(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            get = f"GET {{}} HTTP/1.1\r\nHost: {host}\r\n\r\n"
            first = _exchange(sock, get.format("/runs").encode())
            assert first.startswith(b"HTTP/1.1 500"), first[:200]
            assert b"internal server error" in first.lower()
            second = _exchange(sock, get.format("/health").encode())
            assert second.startswith(b"HTTP/1.1 200"), second[:200]
