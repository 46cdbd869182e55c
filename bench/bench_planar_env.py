"""Throughput of the planar imitation env: env steps/s for N = 1, 16, 64 with random actions.

Every step includes the MuJoCo physics, the autoresets and the per-term rewards of all
five clips. Prints a Markdown table and the command that produced it::

    .venv/bin/python bench/bench_planar_env.py [--env-steps 12800] [--sizes 1 16 64]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass

import numpy as np

from learner.envs.planar import PlanarConfig, PlanarVecEnv


@dataclass(frozen=True)
class BenchRow:
    """One measured batch size."""

    num_envs: int
    env_steps: int
    seconds: float
    episodes: int

    @property
    def steps_per_second(self) -> float:
        """Env steps (summed over the batch) per wall-clock second."""
        return self.env_steps / self.seconds


def measure(num_envs: int, env_steps: int, seed: int = 0) -> BenchRow:
    """Step ``num_envs`` walkers with uniform random actions for about ``env_steps`` env steps."""
    rng = np.random.default_rng(seed)
    num_clips = 5
    env = PlanarVecEnv(None, num_envs, lambda: int(rng.integers(num_clips)), PlanarConfig())
    env.reset(seed=seed)
    batches = max(50, env_steps // num_envs)
    actions = rng.uniform(-1.0, 1.0, size=(256, num_envs, env.action_dim))
    for t in range(20):  # warm-up
        env.step(actions[t])
    episodes = 0
    start = time.perf_counter()
    for t in range(batches):
        episodes += len(env.step(actions[t % len(actions)]).episodes)
    seconds = time.perf_counter() - start
    env.close()
    return BenchRow(num_envs, batches * num_envs, seconds, episodes)


def markdown_table(rows: list[BenchRow]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| N (envs) | env steps/s | µs per env step | ms per batched step | episodes ended |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        per_env = 1e6 / row.steps_per_second
        per_batch = 1e3 * row.seconds / (row.env_steps / row.num_envs)
        lines.append(
            f"| {row.num_envs} | {row.steps_per_second:,.0f} | {per_env:.1f} "
            f"| {per_batch:.2f} | {row.episodes} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-steps", type=int, default=12_800, help="env steps per row")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64], help="batch sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [measure(n, args.env_steps, args.seed) for n in args.sizes]
    command = shlex.join([sys.executable, *sys.argv])
    sys.stdout.write(f"{markdown_table(rows)}\n\nCommand: `{command}`\n")


if __name__ == "__main__":
    main()
