"""In-process clip sampling time: ``ClipSampler`` against ``rng.choice`` for 5 and 10,000 clips.

Each cell is the median over repeats of the mean time per call (``time.perf_counter``).
A second table times the two sampling paths (CDF search, alias table) for several batch
sizes, which is where ``ALIAS_MIN_DRAWS`` comes from. Prints Markdown and the command::

    .venv/bin/python bench/bench_sampling.py [--repeats 21] [--budget 0.03]
"""

from __future__ import annotations

import argparse
import functools
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from scheduler_service.algorithms.sampler import ALIAS_MIN_DRAWS, ClipSampler

CLIP_COUNTS = (5, 10_000)
CROSSOVER_DRAWS = (1, 8, 32, 64, 128, 512, 4096)


def per_call_seconds(call: Callable[[], object], repeats: int, budget: float) -> float:
    """Median over ``repeats`` of the mean time of one call, each repeat lasting ~``budget`` s."""
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(budget / once))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def skewed_probs(num_clips: int, rng: np.random.Generator) -> np.ndarray:
    """A non-uniform distribution with a few zero-probability clips."""
    weights = rng.random(num_clips) ** 4
    weights[rng.random(num_clips) < 0.05] = 0.0
    weights[0] = 1.0
    probs: np.ndarray = weights / weights.sum()
    return probs


def fmt(seconds: float) -> str:
    """Microseconds with sensible precision."""
    us = seconds * 1e6
    return f"{us:.2f} µs" if us < 10 else f"{us:.0f} µs"


def main(argv: list[str] | None = None) -> None:
    """Run both tables and print them as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="repeats per cell (median)")
    parser.add_argument("--budget", type=float, default=0.03, help="seconds per repeat")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    probs = {k: skewed_probs(k, rng) for k in CLIP_COUNTS}
    samplers = {k: ClipSampler(p) for k, p in probs.items()}

    def cell(call: Callable[[], object]) -> str:
        return fmt(per_call_seconds(call, args.repeats, args.budget))

    rows: list[tuple[str, Callable[[int], Callable[[], object]]]] = [
        ("`ClipSampler.sample(1)`", lambda k: lambda: samplers[k].sample(1, rng)),
        ("`ClipSampler.sample(4096)`", lambda k: lambda: samplers[k].sample(4096, rng)),
        ("`ClipSampler(probs)` rebuild", lambda k: lambda: ClipSampler(probs[k])),
        ("`rng.choice(K, p=p)`, 1 draw", lambda k: lambda: rng.choice(k, p=probs[k])),
    ]
    print(f"`{shlex.join([sys.executable, *sys.argv])}`\n")
    print("| call | " + " | ".join(f"{k:,} clips" for k in CLIP_COUNTS) + " |")
    print("| --- |" + " ---: |" * len(CLIP_COUNTS))
    for label, make in rows:
        print(f"| {label} | " + " | ".join(cell(make(k)) for k in CLIP_COUNTS) + " |")

    print(f"\nCDF search / alias table per call (`sample` switches at n >= {ALIAS_MIN_DRAWS}):\n")
    print("| draws n | " + " | ".join(f"{k:,} clips" for k in CLIP_COUNTS) + " |")
    print("| ---: |" + " ---: |" * len(CLIP_COUNTS))
    for n in CROSSOVER_DRAWS:
        cells = []
        for k in CLIP_COUNTS:
            sampler = samplers[k]
            cdf = cell(functools.partial(sampler.sample_inverse_cdf, n, rng))
            alias = cell(functools.partial(sampler.sample_alias, n, rng))
            cells.append(f"{cdf} / {alias}")
        print(f"| {n:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
