"""Outcome ingestion and next-clips throughput: SQLite, and 1 vs 2 replicas on PostgreSQL.

Each configuration starts real ``clipsched serve`` processes on loopback (the command
docker-compose.yml runs), creates an 8-clip controller run and measures:

- outcome ingestion in batches of 256 (4 reward terms each, fresh episode ids) at
  concurrency 4, in rows/s (workers spread over the replicas);
- ``next-clips`` (n=1, the call at an episode reset) at concurrency 16, in requests/s,
  with a minimal keep-alive HTTP/1.1 client on raw asyncio streams (httpx would be the
  bottleneck on this machine), connections spread over the replicas.

The load generator shares the machine's cores with the servers (and PostgreSQL), so
read the rows side by side, as ratios. PostgreSQL comes from ``--postgres-url`` or
``$CLIPSCHED_TEST_POSTGRES_URL``; each configuration gets a fresh schema, dropped after::

    .venv/bin/python bench/bench_replicas.py [--seconds 3] [--batches 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from loadgen import free_port, outcome_batches, raw_get_load

CLIPS = [f"clip{i}" for i in range(8)]
RUN = "bench"


@dataclass
class Row:
    """One line of the table."""

    setup: str
    ingest_rows_s: float
    ingest_errors: int
    next_clips_req_s: float
    next_clips_p99_ms: float
    next_clips_errors: int


@contextlib.contextmanager
def schedulers(database_url: str, count: int, log_dir: Path) -> Iterator[list[str]]:
    """``count`` scheduler processes on one database, started one after the other."""
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for i in range(count):
            port = free_port()
            env = {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "HOME": str(log_dir),
                "CLIPSCHED_DATABASE_URL": database_url,
                "CLIPSCHED_HOST": "127.0.0.1",
                "CLIPSCHED_PORT": str(port),
                "CLIPSCHED_LOG_LEVEL": "WARNING",
            }
            log = log_dir / f"scheduler-{i}.log"
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "scheduler_service", "serve"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30.0
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if processes[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"scheduler {i} did not start; see {log.name}")
                time.sleep(0.05)
            urls.append(url)
        yield urls
    finally:
        for process in reversed(processes):  # ours, by PID
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


@contextlib.contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"clipsched_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def create_run(url: str) -> None:
    """An 8-clip controller run whose controller runs now and then during the ingest."""
    body = {
        "name": RUN,
        "clips": [{"name": n} for n in CLIPS],
        "strategy": {"kind": "controller", "update_every_steps": 200_000},
    }
    httpx.post(f"{url}/runs", json=body, timeout=30.0).raise_for_status()


async def ingest(urls: list[str], batches: list[bytes], concurrency: int) -> tuple[float, int]:
    """Rows/s and 5xx count; worker i posts to replica i mod R."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    rows, errors = 0, 0
    headers = {"content-type": "application/json"}
    clients = [
        httpx.AsyncClient(base_url=urls[i % len(urls)], timeout=60.0) for i in range(concurrency)
    ]

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal rows, errors
        while not queue.empty():
            body = queue.get_nowait()
            response = await client.post(f"/runs/{RUN}/outcomes", content=body, headers=headers)
            if response.status_code >= 500:
                errors += 1
            else:
                response.raise_for_status()
                rows += response.json()["accepted"]

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    seconds = time.perf_counter() - start
    for client in clients:
        await client.aclose()
    return rows / seconds, errors


async def next_clips(urls: list[str], concurrency: int, seconds: float) -> tuple[float, float, int]:
    """Requests/s, p99 ms and 5xx count of keep-alive GETs; connection i to replica i mod R."""
    path = f"/runs/{RUN}/next-clips?n=1&learner_id=bench&known_version=1"
    load = await raw_get_load(urls, path, concurrency, seconds)
    p99 = float(np.percentile(load.latencies_ms, 99))
    return len(load.latencies_ms) / load.seconds, p99, load.errors


def measure(setup: str, urls: list[str], args: argparse.Namespace) -> Row:
    """Create the run, then next-clips at 16 and ingestion at 4."""
    create_run(urls[0])
    req_s, p99, clip_errors = asyncio.run(next_clips(urls, 16, args.seconds))
    batches = outcome_batches(len(CLIPS), args.batches, 256, f"bench-{len(urls)}")
    rows_s, ingest_errors = asyncio.run(ingest(urls, batches, 4))
    return Row(setup, rows_s, ingest_errors, req_s, p99, clip_errors)


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| setup | outcomes rows/s (256/batch, conc. 4) | next-clips req/s (conc. 16) "
        "| next-clips p99 ms | 5xx |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r.setup} | {r.ingest_rows_s:,.0f} | {r.next_clips_req_s:,.0f} "
        f"| {r.next_clips_p99_ms:.1f} | {r.ingest_errors + r.next_clips_errors} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the three configurations and print the table and the command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="next-clips measurement")
    parser.add_argument("--batches", type=int, default=40, help="outcome batches of 256")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CLIPSCHED_TEST_POSTGRES_URL"),
        help="PostgreSQL for the replica rows (default: $CLIPSCHED_TEST_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with schedulers(f"sqlite:///{work / 'bench.db'}", 1, work) as urls:
            rows.append(measure("SQLite, 1 process", urls, args))
        if args.postgres_url:
            for count in (1, 2):
                with (
                    postgres_schema(args.postgres_url) as url,
                    schedulers(url, count, work) as urls,
                ):
                    label = "replica" if count == 1 else "replicas"
                    rows.append(measure(f"PostgreSQL, {count} {label}", urls, args))
        else:
            print("no PostgreSQL URL: only the SQLite row", file=sys.stderr)
    print(markdown(rows))
    print()
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    print(f"`{command}` ({os.cpu_count()} cores shared by the servers, PostgreSQL and the client)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
