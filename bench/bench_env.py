"""Throughput of the humanoid imitation env: control steps/s in one process.

Rows: the batched ``HumanoidVecEnv`` at N = 1 and N = 8, the single-env gymnasium wrapper
(what a per-env vectoriser such as SB3's DummyVecEnv steps), and the physics alone
(``mj_step`` of the same batched model, 8 substeps, random controls) as the ceiling.
Every env step is 30 Hz control over 240 Hz physics and includes the per-term rewards of
all five clips (Idle, Walk, Back, Run, Sprint), the fall check and the autoresets; actions
are uniform random, so characters fall often and resets are part of the cost. Prints a
Markdown table and the command that produced it::

    .venv/bin/python bench/bench_env.py [--env-steps 4000] [--sizes 1 8] [--clip-source builtin]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from learner import humanoid as hm
from learner.envs.humanoid import HumanoidConfig, HumanoidGymEnv, HumanoidVecEnv


@dataclass(frozen=True)
class BenchRow:
    """One measured configuration."""

    label: str
    num_envs: int
    env_steps: int
    seconds: float
    episodes: int

    @property
    def steps_per_second(self) -> float:
        """Control steps (summed over the batch) per wall-clock second."""
        return self.env_steps / self.seconds


def _timed(batches: int, step: Callable[[int], int]) -> tuple[float, int]:
    """Seconds for ``batches`` calls of step(t) after 10 warm-up calls, and its summed result."""
    for t in range(10):
        step(t)
    ended = 0
    start = time.perf_counter()
    for t in range(batches):
        ended += step(t)
    return time.perf_counter() - start, ended


def measure_vec(num_envs: int, env_steps: int, config: HumanoidConfig, seed: int = 0) -> BenchRow:
    """``HumanoidVecEnv`` with ``num_envs`` characters and uniform random actions."""
    rng = np.random.default_rng(seed)
    env = HumanoidVecEnv(None, num_envs, lambda: int(rng.integers(5)), config, seed=seed)
    env.reset(seed=seed)
    actions = rng.uniform(-1.0, 1.0, size=(256, num_envs, env.action_dim))
    batches = max(50, env_steps // num_envs)
    seconds, episodes = _timed(batches, lambda t: len(env.step(actions[t % 256]).episodes))
    env.close()
    return BenchRow(f"HumanoidVecEnv N={num_envs}", num_envs, batches * num_envs, seconds, episodes)


def measure_gym(env_steps: int, config: HumanoidConfig, seed: int = 0) -> BenchRow:
    """The single-env gymnasium wrapper, reset by hand when an episode ends."""
    env = HumanoidGymEnv(config=config)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(256)]

    def step(t: int) -> int:
        _, _, terminated, truncated, _ = env.step(actions[t % 256])
        if terminated or truncated:
            env.reset()
            return 1
        return 0

    seconds, episodes = _timed(max(50, env_steps), step)
    env.close()
    return BenchRow("HumanoidGymEnv (1 env)", 1, max(50, env_steps), seconds, episodes)


def measure_physics(
    num_envs: int, env_steps: int, config: HumanoidConfig, seed: int = 0
) -> BenchRow:
    """MuJoCo alone: the batched model stepped ``substeps`` times per control step."""
    model = hm.build_batched_model(num_envs, config.physics_dt)
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    low, high = model.actuator_ctrlrange.T
    controls = rng.uniform(low, high, size=(256, model.nu))
    batches = max(50, env_steps // num_envs)

    def step(t: int) -> int:
        data.ctrl[:] = controls[t % 256]
        mujoco.mj_step(model, data, nstep=config.substeps)
        if t % 30 == 0:  # keep the characters from lying on the floor the whole run
            mujoco.mj_resetData(model, data)
        return 0

    seconds, _ = _timed(batches, step)
    return BenchRow(f"physics only N={num_envs}", num_envs, batches * num_envs, seconds, 0)


def markdown_table(rows: list[BenchRow]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| configuration | control steps/s | µs per env step | episodes ended |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        per_env = 1e6 / row.steps_per_second
        lines.append(
            f"| {row.label} | {row.steps_per_second:,.0f} | {per_env:.0f} | {row.episodes} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-steps", type=int, default=4000, help="control steps per row")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8], help="batch sizes")
    parser.add_argument(
        "--clip-source",
        default=None,
        help="walk/run source of the five clips: builtin, pybullet_data or a directory "
        "(default: pybullet_data if installed, else builtin)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = HumanoidConfig(clip_source=args.clip_source)
    rows = [measure_vec(n, args.env_steps, config, args.seed) for n in args.sizes]
    rows.append(measure_gym(args.env_steps, config, args.seed))
    rows += [measure_physics(n, args.env_steps, config, args.seed) for n in args.sizes]
    command = shlex.join([sys.executable, *sys.argv])
    sys.stdout.write(f"{markdown_table(rows)}\n\nCommand: `{command}`\n")


if __name__ == "__main__":
    main()
