"""What the service benchmarks share: a free port, outcome batches, a raw keep-alive GET load.

Imported by ``bench_service.py`` and ``bench_replicas.py`` (run as scripts, so ``bench/``
is on ``sys.path``). The raw client writes one pre-built HTTP/1.1 request and reads the
answer by its Content-Length on asyncio streams: httpx costs more CPU per request than
the server on this machine, so its numbers would be the client's limit.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

TERMS = ("pose", "velocity", "end_effector", "root")
"""Reward terms of a synthetic outcome."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def outcome_batches(clips: int, count: int, size: int, tag: str, terms: bool = True) -> list[bytes]:
    """Pre-serialised ``POST /runs/{run}/outcomes`` bodies with fresh episode ids.

    Clip ids are uniform over ``clips``; with ``terms`` each outcome carries the moments
    of the four reward terms.
    """
    rng = np.random.default_rng(0)
    batches = []
    for b in range(count):
        outcomes = []
        for i in range(size):
            item: dict[str, Any] = {
                "episode_id": f"{tag}-{b}-{i}",
                "clip": int(rng.integers(clips)),
                "steps": int(rng.integers(20, 300)),
                "return": float(rng.normal(50, 10)),
                "success": float(rng.random() < 0.7),
            }
            if terms:
                item["reward_terms"] = {
                    t: {"count": item["steps"], "mean": float(rng.random()), "m2": 1.0}
                    for t in TERMS
                }
            outcomes.append(item)
        batches.append(orjson.dumps({"learner_id": tag, "outcomes": outcomes}))
    return batches


@dataclass
class GetLoad:
    """What a raw GET load measured."""

    latencies_ms: list[float]
    errors: int
    """Answers with a 5xx status."""
    seconds: float


async def raw_get_load(
    urls: Sequence[str], path: str, concurrency: int, seconds: float, warmup: float = 0.5
) -> GetLoad:
    """``concurrency`` keep-alive connections GET ``path`` for ``seconds`` after a warm-up.

    Connection i goes to ``urls[i % len(urls)]``.
    """
    result = GetLoad([], 0, 0.0)

    async def worker(url: str, stop: float, record: bool) -> None:
        host, port = url.removeprefix("http://").split(":")
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            if record:
                result.latencies_ms.append((time.perf_counter() - t0) * 1e3)
                result.errors += head[9:10] == b"5"
        writer.close()

    targets = [urls[i % len(urls)] for i in range(concurrency)]
    await asyncio.gather(*(worker(u, time.perf_counter() + warmup, False) for u in targets))
    start = time.perf_counter()
    await asyncio.gather(*(worker(u, start + seconds, True) for u in targets))
    result.seconds = time.perf_counter() - start
    return result
