"""Latency and throughput of the scheduler service over real HTTP.

Starts the service (``scheduler_service.server.serve``: uvicorn, one worker, uvloop and
httptools) in a subprocess on a loopback port and a temporary SQLite file, creates a run
with 5 and one with 10,000 clips, and measures with httpx clients:

- ``next-clips`` (n=1, the actor's call at an episode reset) p50/p99 at concurrency 1
  (keep-alive ``httpx.Client``) and 16 (``httpx.AsyncClient``, one per worker), and
  requests/s at 16;
- the same with a minimal keep-alive HTTP/1.1 client on raw asyncio streams, because
  httpx itself costs more CPU per request than the server on this machine (its
  numbers are the client's limit, not the server's);
- ``next-clips`` with n=4,096 (one call for a whole vectorised env) p50;
- outcome ingestion in batches of 256 (4 reward terms per outcome) at concurrency 1
  and 4, in rows/s, counting 5xx answers and "database is locked" errors.

Prints a Markdown table and the command that produced it::

    .venv/bin/python bench/bench_service.py [--seconds 3] [--no-terms]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from loadgen import free_port, outcome_batches, raw_get_load

SERVER = (
    "import sys; from scheduler_service.config import Settings; "
    "from scheduler_service.server import serve; "
    "serve(Settings(database_url=sys.argv[1], port=int(sys.argv[2]), log_level='WARNING'))"
)


@dataclass
class Row:
    """One measured line of the table."""

    what: str
    client: str
    clips: int
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    items: int = 0
    errors: int = 0
    locked: int = 0
    updates: int = 0

    def cells(self) -> list[str]:
        """Table cells: p50, p99, requests/s, rows/s, errors."""
        lat = np.asarray(self.latencies_ms)
        p50 = f"{np.percentile(lat, 50):.2f}" if lat.size else "-"
        p99 = f"{np.percentile(lat, 99):.2f}" if lat.size else "-"
        rps = f"{lat.size / self.seconds:,.0f}" if self.seconds else "-"
        rows = f"{self.items / self.seconds:,.0f}" if self.items and self.seconds else "-"
        return [
            f"{self.what} ({self.updates} updates)" if self.updates else self.what,
            self.client,
            f"{self.clips:,}",
            str(self.concurrency),
            p50,
            p99,
            rps,
            rows,
            f"{self.errors} / {self.locked}",
        ]


@contextmanager
def server(database: Path) -> Iterator[str]:
    """The scheduler in a subprocess; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, f"sqlite:///{database}", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30.0
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {process.stderr.read()}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        if "database is locked" in stderr:
            print("server log mentions 'database is locked'", file=sys.stderr)


def create_run(url: str, name: str, clips: int) -> None:
    """A controller run (design-note preset) with ``clips`` clips."""
    body = {
        "name": name,
        "clips": [{"name": f"clip-{i:05d}"} for i in range(clips)],
        "preset": "design-note",
        # ~1,250 outcomes of ~160 steps per update: several updates per measurement
        "strategy": {"update_every_steps": 200_000},
    }
    response = httpx.post(f"{url}/runs", json=body, timeout=60.0)
    response.raise_for_status()


def next_clips_sequential(url: str, run: str, clips: int, n: int, seconds: float) -> Row:
    """Concurrency 1: one keep-alive client, back-to-back requests."""
    row = Row(f"next-clips n={n}", "httpx", clips, 1)
    params = {"n": n, "learner_id": "bench", "known_version": 1}
    with httpx.Client(base_url=url) as client:
        for _ in range(50):  # warm-up (and the actor view is built)
            client.get(f"/runs/{run}/next-clips", params=params)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            response = client.get(f"/runs/{run}/next-clips", params=params)
            row.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            row.errors += response.status_code >= 500
        row.seconds = time.perf_counter() - start
    return row


async def _next_clips_concurrent(url: str, run: str, clips: int, seconds: float) -> Row:
    row = Row("next-clips n=1", "httpx", clips, 16)
    params = {"n": 1, "learner_id": "bench", "known_version": 1}
    # one client per worker: 16 workers sharing one pool serialise on its lock
    clients = [httpx.AsyncClient(base_url=url) for _ in range(16)]

    async def worker(client: httpx.AsyncClient, stop: float) -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            response = await client.get(f"/runs/{run}/next-clips", params=params)
            row.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            row.errors += response.status_code >= 500

    await asyncio.gather(*(worker(c, time.perf_counter() + 0.5) for c in clients))
    row.latencies_ms.clear()
    start = time.perf_counter()
    await asyncio.gather(*(worker(c, start + seconds) for c in clients))
    row.seconds = time.perf_counter() - start
    for client in clients:
        await client.aclose()
    return row


async def _next_clips_raw(url: str, run: str, clips: int, concurrency: int, seconds: float) -> Row:
    """Keep-alive HTTP/1.1 GETs on raw asyncio streams (a load generator that costs little)."""
    path = f"/runs/{run}/next-clips?n=1&learner_id=bench&known_version=1"
    load = await raw_get_load([url], path, concurrency, seconds)
    row = Row("next-clips n=1", "raw", clips, concurrency, latencies_ms=load.latencies_ms)
    row.errors, row.seconds = load.errors, load.seconds
    return row


async def _ingest(url: str, run: str, clips: int, concurrency: int, batches: list[bytes]) -> Row:
    row = Row("outcomes, batches of 256", "httpx", clips, concurrency)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                response = await client.post(f"/runs/{run}/outcomes", content=body, headers=headers)
                row.latencies_ms.append((time.perf_counter() - t0) * 1e3)
                if response.status_code >= 500:
                    row.errors += 1
                    row.locked += "locked" in response.text
                else:
                    response.raise_for_status()
                    answer = response.json()
                    row.items += answer["accepted"]
                    row.updates += answer["updated"]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        row.seconds = time.perf_counter() - start
    return row


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    head = [
        "call",
        "client",
        "clips",
        "concurrency",
        "p50 ms",
        "p99 ms",
        "requests/s",
        "rows/s",
        "5xx / locked",
    ]
    lines = [
        "| " + " | ".join(head) + " |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per latency measurement")
    parser.add_argument("--batches", type=int, default=40, help="outcome batches per run")
    parser.add_argument("--no-terms", action="store_true", help="outcomes without reward terms")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp) / "bench.db") as url:
        for clips in (5, 10_000):
            run = f"bench-{clips}"
            create_run(url, run, clips)
            rows.append(next_clips_sequential(url, run, clips, 1, args.seconds))
            rows.append(asyncio.run(_next_clips_raw(url, run, clips, 1, args.seconds)))
            rows.append(asyncio.run(_next_clips_concurrent(url, run, clips, args.seconds)))
            rows.append(asyncio.run(_next_clips_raw(url, run, clips, 16, args.seconds)))
            rows.append(next_clips_sequential(url, run, clips, 4096, args.seconds / 2))
            for concurrency in (1, 4):
                batches = outcome_batches(
                    clips, args.batches, 256, f"c{concurrency}", not args.no_terms
                )
                rows.append(asyncio.run(_ingest(url, run, clips, concurrency, batches)))
    print(markdown(rows))
    print()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    print(f"`{command}` ({os.cpu_count()} cores, SQLite WAL synchronous=FULL)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
