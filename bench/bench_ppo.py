"""PPO training throughput: our learner vs Stable-Baselines3 vs the env-only ceiling.

Same env, same machine, same rollout size (num_envs x rollout_steps), single-threaded
torch. Runs are interleaved (every contender once per round, rotating the order) for
``--rounds`` rounds, so load from other processes hits every contender alike; the tables
show the median env steps/s of each and medians of per-round ratios.

    .venv/bin/pip install -c constraints.txt -e ".[bench]"   # stable-baselines3
    .venv/bin/python bench/bench_ppo.py --env humanoid --steps 8192 --rounds 3

Contenders:
- env only: the same batched env stepped with random actions, no policy (the ceiling);
- ours: the stages of ``learner.train`` (rollout with reward shaping and outcome reports,
  GAE, PPO update, TensorBoard logging), with our defaults (256x256 ReLU, minibatch 512,
  5 epochs, batched obs normalisation and return scaling, per-clip z-scored terms with
  LSE aggregation), and once with SB3's default network size (64x64 tanh);
- SB3 env only: SB3's ``DummyVecEnv`` of the single-env gymnasium wrapper, random
  actions (what SB3 steps: one 1-slot env per Python call);
- SB3 defaults: ``PPO("MlpPolicy")`` as shipped (64x64 tanh, minibatch 64, 10 epochs)
  with ``VecNormalize`` (obs and reward) over that ``DummyVecEnv``;
- SB3 with our network (sizes, activation), minibatch and epochs;
- ours with the HTTP scheduler: the same defaults, but clips come from (and outcomes go
  to) a real ``clipsched serve`` process on loopback running the design-note preset,
  through ``SchedulerClipSource`` — the scheduler's cost against in-process static
  sampling;
- ours with the other ``update_threads`` setting (2, the default: the critic's epochs of
  each update run on a second thread beside the actor's epochs and the next rollout;
  1: everything on one thread), and SB3 (defaults) with 2 torch threads during its
  ``train()``: the second core, idle while the update runs, is offered to both.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learner.config import TrainConfig
from learner.envs.builders import ENV_BUILDERS
from learner.train import Learner

logger = logging.getLogger("bench_ppo")


def gym_env_factory(kind: str) -> Callable[[], gym.Env[np.ndarray, np.ndarray]]:
    """Single-env gymnasium wrapper of the same env (what SB3 steps), by env kind."""

    def planar() -> gym.Env[np.ndarray, np.ndarray]:
        from learner.envs.planar import PlanarGymEnv

        return PlanarGymEnv()

    def humanoid() -> gym.Env[np.ndarray, np.ndarray]:
        from learner.envs.humanoid import HumanoidGymEnv

        return HumanoidGymEnv()

    return {"planar": planar, "humanoid": humanoid}[kind]


def sb3_vec_env(config: TrainConfig) -> Any:
    """SB3's DummyVecEnv of ``num_envs`` single-env wrappers, seeded like SB3 does."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    make = gym_env_factory(config.env)
    venv = DummyVecEnv([make] * config.num_envs)
    venv.seed(config.seed)
    return venv


def bench_sb3_env_only(config: TrainConfig, steps: int) -> float:
    """Env steps/s of SB3's DummyVecEnv of single-env wrappers with random actions."""
    venv = sb3_vec_env(config)
    rng = np.random.default_rng(config.seed)
    try:
        venv.reset()
        shape = (64, config.num_envs, *venv.action_space.shape)
        actions = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
        for i in range(8):
            venv.step(actions[i % 64])
        vec_steps = max(1, steps // config.num_envs)
        started = time.perf_counter()
        for i in range(vec_steps):
            venv.step(actions[i % 64])
        return vec_steps * config.num_envs / (time.perf_counter() - started)
    finally:
        venv.close()


def bench_env_only(config: TrainConfig, steps: int) -> float:
    """Env steps/s of the batched env with random actions and no policy."""
    rng = np.random.default_rng(config.seed)
    env = ENV_BUILDERS[config.env](config, lambda: int(rng.integers(num_clips)))
    num_clips = len(env.clip_names)
    try:
        env.reset(seed=config.seed)
        actions = rng.uniform(-1.0, 1.0, size=(64, env.num_envs, env.action_dim)).astype(np.float32)
        for i in range(8):  # warm-up
            env.step(actions[i % 64])
        vec_steps = max(1, steps // env.num_envs)
        started = time.perf_counter()
        for i in range(vec_steps):
            env.step(actions[i % 64])
        return vec_steps * env.num_envs / (time.perf_counter() - started)
    finally:
        env.close()


def bench_ours(config: TrainConfig, steps: int) -> float:
    """Env steps/s of our loop (rollout -> advantages -> update -> log), after one warm-up."""
    with contextlib.ExitStack() as stack:
        learner = Learner.open(config, None, None, stack)

        def iteration() -> None:
            rollout = learner.collect_rollout()
            learner.log(rollout, learner.update(learner.advantages(rollout)))

        iteration()
        start_step, started = learner.global_step, time.perf_counter()
        while learner.global_step - start_step < steps:
            iteration()
        return (learner.global_step - start_step) / (time.perf_counter() - started)


@contextlib.contextmanager
def scheduler_process(db: Path) -> Any:
    """A ``clipsched serve`` subprocess on a free loopback port; yields its URL."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "scheduler_service", "serve", "--port", str(port),
           "--database-url", f"sqlite:///{db}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the scheduler did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


SB3_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "relu": torch.nn.ReLU,
    "tanh": torch.nn.Tanh,
    "elu": torch.nn.ELU,
}


def sb3_matched_kwargs(config: TrainConfig) -> dict[str, Any]:
    """SB3 PPO arguments that mirror our network, minibatch and epochs."""
    return {
        "batch_size": config.minibatch_size,
        "n_epochs": config.update_epochs,
        "policy_kwargs": {
            "net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)},
            "log_std_init": config.init_log_std,
            "activation_fn": SB3_ACTIVATIONS[config.activation],
        },
    }


def bench_sb3(
    config: TrainConfig, steps: int, ppo_kwargs: dict[str, Any], update_threads: int = 1
) -> float:
    """Env steps/s of SB3 PPO on a DummyVecEnv of the single-env wrapper, after a warm-up.

    ``update_threads`` torch threads during SB3's ``train()`` (its update), one otherwise.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(sb3_vec_env(config), gamma=config.gamma)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=config.rollout_steps,
        device="cpu",
        seed=config.seed,
        verbose=0,
        **ppo_kwargs,
    )
    if update_threads != 1:
        sb3_train = model.train

        def train_with_threads() -> None:
            torch.set_num_threads(update_threads)
            try:
                sb3_train()
            finally:
                torch.set_num_threads(1)

        model.train = train_with_threads  # type: ignore[method-assign]
    try:
        model.learn(total_timesteps=config.batch_size)  # warm-up: one rollout + update
        started_steps, started = model.num_timesteps, time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        return (model.num_timesteps - started_steps) / (time.perf_counter() - started)
    finally:
        venv.close()


CEILING = "env only (batched env, random actions)"
OURS = "ours, defaults (256x256 ReLU, minibatch 512, 5 epochs)"
OURS_SMALL = "ours, SB3's default net (64x64 tanh, minibatch 512, 5 epochs)"
SB3_ENV = "SB3 env only (DummyVecEnv of 1-env wrappers, random actions)"
SB3_DEFAULTS = "SB3 defaults (64x64 tanh, minibatch 64, 10 epochs)"
SB3_MATCHED = "SB3 with our net, minibatch and epochs (256x256 ReLU, 512, 5)"
OURS_HTTP = "ours, defaults, clips from the HTTP scheduler (design-note preset)"
OURS_OTHER_THREADS = "ours, defaults but update_threads={n}"
SB3_THREADS = "SB3 defaults, 2 torch threads in its update"
COMPARISONS = (
    (OURS, SB3_MATCHED, "ours / SB3, same net, minibatch, epochs"),
    (OURS, SB3_DEFAULTS, "ours (defaults) / SB3 (defaults)"),
    (OURS_SMALL, SB3_DEFAULTS, "ours / SB3, same 64x64 net (each its own minibatch/epochs)"),
    (OURS, CEILING, "ours (defaults) / env-only ceiling"),
    (OURS_SMALL, CEILING, "ours (64x64 net) / env-only ceiling"),
    (OURS_HTTP, OURS, "ours with the HTTP scheduler / ours with in-process static sampling"),
)


def thread_comparisons(default_threads: int) -> tuple[tuple[str, str, str], ...]:
    """Ratios involving the other ``update_threads`` setting and SB3 with 2 threads."""
    n = 3 - default_threads
    other = OURS_OTHER_THREADS.format(n=n)
    return (
        (OURS, SB3_THREADS, "ours (defaults) / SB3 (defaults, 2 threads in its update)"),
        (other, CEILING, f"ours (update_threads={n}) / env-only ceiling"),
        (OURS, other, f"ours (update_threads={default_threads}) / ours (update_threads={n})"),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved benchmark and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(ENV_BUILDERS), default="humanoid")
    parser.add_argument(
        "--steps", type=int, default=8192, help="timed env steps per contender per round"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--rollout-steps", type=int, default=256)
    parser.add_argument("--no-sb3", action="store_true", help="only env-only and ours")
    parser.add_argument(
        "--no-scheduler", action="store_true", help="skip the HTTP-scheduler contender"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="bench_ppo_"))
    config = TrainConfig(
        env=args.env,
        num_envs=args.num_envs,
        rollout_steps=args.rollout_steps,
        total_steps=10**9,
        progress=False,
        resume=False,
        checkpoint_every=0,
        log_dir=str(tmp / "runs"),
        run_name="bench",
        aggregation="lse",
    )
    small = config.with_overrides(hidden=(64, 64), activation="tanh", run_name="bench-small")
    contenders: dict[str, Callable[[], float]] = {
        CEILING: lambda: bench_env_only(config, args.steps),
        OURS: lambda: bench_ours(config, args.steps),
        OURS_SMALL: lambda: bench_ours(small, args.steps),
    }
    stack = contextlib.ExitStack()
    if not args.no_scheduler:
        url = stack.enter_context(scheduler_process(tmp / "scheduler.db"))
        http = config.with_overrides(scheduler_url=url, run_name="bench-http")
        contenders[OURS_HTTP] = lambda: bench_ours(http, args.steps)
    if not args.no_sb3:
        contenders[SB3_ENV] = lambda: bench_sb3_env_only(config, args.steps)
        contenders[SB3_DEFAULTS] = lambda: bench_sb3(config, args.steps, {})
        contenders[SB3_MATCHED] = lambda: bench_sb3(config, args.steps, sb3_matched_kwargs(config))

    other_threads = 3 - config.update_threads
    other = config.with_overrides(update_threads=other_threads, run_name="bench-threads")
    contenders[OURS_OTHER_THREADS.format(n=other_threads)] = lambda: bench_ours(other, args.steps)
    if not args.no_sb3:
        contenders[SB3_THREADS] = lambda: bench_sb3(config, args.steps, {}, update_threads=2)
    comparisons = (*COMPARISONS, *thread_comparisons(config.update_threads))
    results: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    with stack:
        for round_index in range(args.rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                results[name].append(contenders[name]())
                logger.warning(
                    "round %d %s: %.0f steps/s", round_index + 1, name, results[name][-1]
                )

    ceiling = results[CEILING]
    lines = [
        f"PPO training throughput, env `{args.env}`, {args.num_envs} envs x "
        f"{args.rollout_steps} steps per rollout (same for SB3), {args.steps} timed steps x "
        f"{args.rounds} interleaved rounds, torch threads 1 (unless a row says otherwise; "
        f"our default update_threads={config.update_threads}), "
        f"{platform.processor() or platform.machine()}",
        "",
        "| contender | env steps/s (median) | runs | / env-only ceiling |",
        "| --- | ---: | --- | ---: |",
    ]
    for name in names:
        runs = results[name]
        share = statistics.median(r / c for r, c in zip(runs, ceiling, strict=True))
        lines.append(
            f"| {name} | {statistics.median(runs):,.0f} | "
            f"{', '.join(f'{r:,.0f}' for r in runs)} | {share:.2f} |"
        )
    lines += ["", "| ratio (median of per-round ratios) | value |", "| --- | ---: |"]
    for top, bottom, label in comparisons:
        if top in results and bottom in results:
            ratios = [a / b for a, b in zip(results[top], results[bottom], strict=True)]
            lines.append(f"| {label} | {statistics.median(ratios):.2f}x |")
    lines += ["", "Command: `" + " ".join([Path(sys.executable).name, *sys.argv]) + "`"]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
