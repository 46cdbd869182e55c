"""``clipsched experiment collapse``: reproduce mode collapse, then show the recipe's effect.

Every arm trains the five-clip example (Idle, Walk, Back, Run, Sprint) with the same
seeds and budget against one real scheduler process (one run per arm and seed), so the
controller, bandits and adaptive weights are the product's own code. Arms (design note):

- ``naive``: uniform static sampling, ``r = max_i r_i``, global normalisation, one value head;
- ``preset``: the §8 preset (controller, LSE tau=0.3, adaptive weights, early curriculum)
  with per-clip z-scores, per-clip value heads and the entropy floor;
- ``-controller``, ``-lse``, ``-per-clip-norm``, ``-per-clip-heads``: the preset minus one;
- ``ucb``, ``thompson``: the preset with a bandit strategy in place of the controller.

After training, each policy is evaluated deterministically on every clip: which clip it
actually matches at each step (argmax over clips of the per-clip tracking reward), its
tracking reward and success on the clip it was started on. Single-clip experts, trained
once with the same code and budget, give the reference for "relative to an expert".
Results go to ``--results`` as one JSON per arm and seed (a finished one is skipped on a
re-run), then ``learner.collapse_report`` writes the table, plots and the docs page.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import contextlib
import json
import logging
import multiprocessing
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsched.client.http import SchedulerClient, SchedulerError
from learner.config import FIVE_CLIPS

logger = logging.getLogger(__name__)

TARGET_USAGE = {"Idle": 0.2, "Walk": 0.25, "Back": 0.2, "Run": 0.2, "Sprint": 0.15}
"""The note's §8 targets; every arm is measured against them."""

NAIVE_TRAIN = {
    "normalization": "global",
    "per_clip_value_heads": False,
    "per_clip_adv_norm": False,
    "entropy_floor": None,
}


@dataclass(frozen=True)
class Arm:
    """One experimental condition: the run spec fields and the TrainConfig overrides."""

    name: str
    run_spec: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)


def _preset(**strategy: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"preset": "design-note", "target_usage": TARGET_USAGE}
    if strategy:
        spec["strategy"] = strategy
    return spec


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm(
            "naive",
            {
                "strategy": {"kind": "static"},
                "target_usage": TARGET_USAGE,
                "clip_probs": {name: 1.0 for name in FIVE_CLIPS},
                "aggregation": {"kind": "max", "adaptive_weights": False},
            },
            NAIVE_TRAIN,
        ),
        Arm("preset", _preset()),
        Arm(
            "-controller",
            _preset(kind="static") | {"clip_probs": {name: 1.0 for name in FIVE_CLIPS}},
        ),
        Arm("-lse", _preset(), {"aggregation": "max"}),
        Arm("-per-clip-norm", _preset(), {"normalization": "global"}),
        Arm("-per-clip-heads", _preset(), {"per_clip_value_heads": False}),
        Arm("ucb", _preset(kind="ucb")),
        Arm("thompson", _preset(kind="thompson")),
    )
}


@dataclass(frozen=True)
class Budget:
    """Steps and sizes shared by every arm."""

    env: str = "planar"
    steps_per_arm: int = 5_000_000
    """Env steps of every arm and seed (the shared policy sees ~1M per clip)."""
    expert_steps: int = 1_000_000
    """Env steps of each single-clip expert."""
    num_envs: int = 16
    rollout_steps: int = 128
    eval_steps: int = 310
    """Control steps of the deterministic evaluation per clip (> one episode)."""
    eval_envs: int = 8

    @property
    def update_every_steps(self) -> int:
        """Controller interval: about 40 updates over the budget (the note's 50k is for ~M)."""
        return max(2_000, self.steps_per_arm // 40)


# ---------------------------------------------------------------------------------------
# Scheduler
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def scheduler_process(db: Path, log: Path) -> Iterator[str]:
    """One ``clipsched serve`` subprocess for the whole experiment; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "scheduler_service", "serve", "--port", str(port),
           "--database-url", f"sqlite:///{db}"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        client = SchedulerClient(url, None, learner_id="experiment", retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.health()
                break
            except SchedulerError:  # not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"scheduler did not start; see {log}") from None
                time.sleep(0.1)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------
# One arm x seed, in a worker process
# ---------------------------------------------------------------------------------------


def _train_config(budget: Budget, seed: int, run_dir: Path, **overrides: Any) -> Any:
    from learner.config import TrainConfig

    return TrainConfig.for_env(
        budget.env,
        num_envs=budget.num_envs,
        rollout_steps=budget.rollout_steps,
        total_steps=budget.steps_per_arm,
        seed=seed,
        progress=False,
        resume=False,
        checkpoint_every=0,
        log_dir=str(run_dir / "tensorboard"),
        run_state_every_s=2.0,
    ).with_overrides(**overrides)


def evaluate_policy(
    model: Any, obs_norm: Any, config: Any, reward_weights: np.ndarray, budget: Budget
) -> dict[str, Any]:
    """Deterministic rollouts started on each clip: matched clips, tracking reward, success."""
    import torch

    from learner.envs.builders import ENV_BUILDERS

    k = len(FIVE_CLIPS)
    matched = np.zeros((k, k))  # [started clip, matched clip] step counts
    reward = np.zeros(k)
    success = np.zeros(k)
    weights = torch.as_tensor(reward_weights, dtype=torch.float32)
    for clip_id in range(k):
        env = ENV_BUILDERS[config.env](
            config.with_overrides(num_envs=budget.eval_envs, seed=config.seed + 1000),
            lambda c=clip_id: c,
        )
        try:
            obs = env.reset(seed=config.seed + 1000)
            ids = torch.full((env.num_envs,), clip_id, dtype=torch.long)
            rewards, outcomes = [], []
            for _ in range(budget.eval_steps):
                x = obs_norm.normalize(obs) if obs_norm is not None else obs.astype(np.float32)
                with torch.no_grad():
                    action = model.action_mean(torch.from_numpy(x), ids, weights).numpy()
                step = env.step(np.clip(action, -1.0, 1.0))
                per_clip = step.clip_terms @ env.term_weights  # (N, K) tracking reward
                np.add.at(matched[clip_id], per_clip.argmax(axis=1), 1)
                rewards.append(step.active_reward.mean())
                outcomes += [e.success for e in step.episodes]
                obs = step.obs
            reward[clip_id] = float(np.mean(rewards))
            success[clip_id] = float(np.mean(outcomes)) if outcomes else 0.0
        finally:
            env.close()
    shares = matched.sum(axis=0) / matched.sum()
    nonzero = shares[shares > 0]
    return {
        "matched_share": shares.tolist(),
        "effective_matched_clips": float(np.exp(-(nonzero * np.log(nonzero)).sum())),
        "tracking_reward": reward.tolist(),
        "success": success.tolist(),
    }


def last_quarter_usage(db: Path, run: str, num_clips: int) -> list[float]:
    """Each clip's share of the last quarter of the run's finished episodes (by arrival).

    Read from the scheduler's SQLite file: the final usage, not the all-episode share that
    an integral controller keeps on target even while recent usage drifts.
    """
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        clip_ids = [row[0] for row in conn.execute(
            "SELECT o.clip_id FROM outcomes o JOIN runs r ON r.id = o.run_id "
            "WHERE r.name = ? ORDER BY o.received_at, o.rowid", (run,))]  # fmt: skip
    tail = clip_ids[-max(1, len(clip_ids) // 4) :] if clip_ids else []
    counts = np.bincount(np.asarray(tail, dtype=np.int64), minlength=num_clips)
    return (counts / max(1, counts.sum())).tolist()


def run_arm(arm_name: str, seed: int, budget: Budget, url: str, results: Path) -> dict[str, Any]:
    """Create the arm's run, train, evaluate; write and return the result JSON."""
    import torch

    from learner.train import train

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    arm = ARMS[arm_name]
    run = f"{arm_name.strip('-')}-s{seed}"
    run_dir = results / "runs" / run
    spec = {"name": run, "clips": [{"name": n} for n in FIVE_CLIPS], **arm.run_spec}
    spec["strategy"] = {**spec.get("strategy", {}), "update_every_steps": budget.update_every_steps}
    with SchedulerClient(url, run, learner_id="experiment") as client:
        client.create_run(spec, exist_ok=True)
        config = _train_config(
            budget, seed, run_dir, scheduler_url=url, run_name=run, learner_id=run, **arm.train
        )
        started = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - started
        state = client.run_state()
        history = client.history()
    clips = state["clips"]
    usage = np.array([c["usage_total"] for c in clips])
    target = np.array([c["target_usage"] for c in clips])
    weights = np.array([c["reward_weight"] for c in clips])
    # Final usage: the run's share of all its finished episodes (``usage_total``). One
    # controller window holds only a dozen or so episodes on a short budget: too noisy.
    final = np.array([c["usage"] for c in clips])
    out = {
        "arm": arm_name,
        "seed": seed,
        "steps": result.global_step,
        "wall_s": wall,
        "usage_total": usage.tolist(),
        "usage_final": final.tolist(),
        "usage_last_quarter": last_quarter_usage(results / "scheduler.db", run, len(FIVE_CLIPS)),
        "target_usage": target.tolist(),
        "usage_l1": float(np.abs(usage - target).sum()),
        "usage_history": [
            {"total_steps": row["total_steps"], "usage": row["usage"]} for row in history
        ],
        **evaluate_policy(result.model, result.obs_norm, config, weights, budget),
    }
    path = results / "arms" / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return out


def run_experts(budget: Budget, results: Path) -> dict[str, Any]:
    """Train one single-clip expert per clip (seed 0) and evaluate each on its own clip."""
    import torch

    from learner.train import load_experts, train_experts

    torch.set_num_threads(1)
    path = results / "experts.json"
    if path.exists():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    config = _train_config(budget, 0, results / "experts").with_overrides(
        total_steps=budget.expert_steps
    )
    started = time.perf_counter()
    train_experts(config, results / "experts")
    from learner.models import ModelConfig

    saved = torch.load(results / "experts" / f"{FIVE_CLIPS[0]}.pt", weights_only=True)
    experts = load_experts(
        results / "experts", list(FIVE_CLIPS), ModelConfig.from_dict(saved["model_config"])
    )
    reward, success = [], []
    for clip_id in range(len(FIVE_CLIPS)):
        expert = experts[clip_id]
        weights = np.eye(len(FIVE_CLIPS))[clip_id]
        ev = evaluate_policy(expert.model, expert.obs_norm, config, weights, budget)
        reward.append(ev["tracking_reward"][clip_id])
        success.append(ev["success"][clip_id])
    out = {"tracking_reward": reward, "success": success, "wall_s": time.perf_counter() - started}
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------


def run_experiment(
    arms: list[str], seeds: list[int], budget: Budget, results: Path, workers: int
) -> list[dict[str, Any]]:
    """Run every arm x seed (skipping finished ones) and the experts; return all results."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "budget.json").write_text(json.dumps(budget.__dict__, indent=1), encoding="utf-8")
    todo = [
        (a, s) for a in arms for s in seeds
        if not (results / "arms" / f"{a.strip('-')}-s{s}.json").exists()
    ]  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    with (
        scheduler_process(results / "scheduler.db", results / "scheduler.log") as url,
        futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool,
    ):
        jobs = {pool.submit(run_experts, budget, results): "experts"}
        jobs |= {pool.submit(run_arm, a, s, budget, url, results): f"{a} seed {s}" for a, s in todo}
        for done, job in enumerate(futures.as_completed(jobs), start=1):
            label = jobs[job]
            job.result()  # re-raise a worker's failure here
            print(f"[{done}/{len(jobs)}] {label} done", flush=True)
    return [
        json.loads(p.read_text(encoding="utf-8")) for p in sorted((results / "arms").glob("*.json"))
    ]


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True)  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def add_experiment_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``experiment collapse`` to the root CLI."""
    parser = subparsers.add_parser("experiment", help="reproducible experiments")
    sub = parser.add_subparsers(dest="experiment", required=True)
    collapse = sub.add_parser("collapse", help=__doc__.splitlines()[0], description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    defaults = Budget()
    collapse.add_argument("--env", choices=("planar", "humanoid"), default=defaults.env)
    collapse.add_argument("--steps-per-arm", type=int, default=defaults.steps_per_arm)
    collapse.add_argument("--expert-steps", type=int, default=defaults.expert_steps)
    collapse.add_argument("--num-envs", type=int, default=defaults.num_envs)
    collapse.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    collapse.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names")
    collapse.add_argument("--results", type=Path, default=Path("results/collapse"))
    collapse.add_argument("--workers", type=int, default=2)
    collapse.add_argument(
        "--page", type=Path, default=None, help="also write the Markdown page here"
    )
    collapse.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite table, plots and page from the result files of a finished run",
    )
    collapse.set_defaults(func=_run_from_args)


def _run_from_args(args: argparse.Namespace) -> int:
    from learner.collapse_report import write_report

    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or args.seeds < 1 or args.steps_per_arm < 1 or args.expert_steps < 1:
        print(f"unknown arms {unknown} (known: {', '.join(ARMS)}) or bad budget", file=sys.stderr)
        return 2
    budget = Budget(
        env=args.env,
        steps_per_arm=args.steps_per_arm,
        expert_steps=args.expert_steps,
        num_envs=args.num_envs,
    )
    command = " ".join(["clipsched", *sys.argv[1:]])
    if not args.report_only:
        started = time.time()
        run_experiment(arms, list(range(args.seeds)), budget, args.results, args.workers)
        run_info = {"command": command, "started": started, "finished": time.time(),
                    "commit": _git_head()}  # fmt: skip
        (args.results / "run.json").write_text(json.dumps(run_info), encoding="utf-8")
    run_info = json.loads((args.results / "run.json").read_text(encoding="utf-8"))
    rows = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((args.results / "arms").glob("*.json"))
    ]
    table = write_report(
        rows,
        args.results,
        page=args.page,
        wall_s=run_info["finished"] - run_info["started"],
        command=run_info["command"],
        commit=run_info.get("commit", "unknown"),
    )
    print(table)
    return 0
