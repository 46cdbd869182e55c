"""Time to skill: env steps and training wall time until a single-clip expert has its clip.

For each clip, a fresh single-clip expert (``clips=(clip,)``, the expert settings below)
trains with the same loop as ``clipsched train`` (the stages of ``learner.train.train``,
driven here so the run can stop early) and evaluates deterministically every
``eval_every`` updates (``Learner.evaluate``: mean action, ``eval_episodes`` episodes,
appended to ``<run_dir>/eval.jsonl``). The run stops at the first evaluation whose
success reaches the goal, or when the step budget (``--max-steps``) or the training-time
budget (``--max-minutes``) is used up (then one last evaluation is made if the last update
had none). Goals (design issue; this 2-core machine): every planar clip (``Idle, Walk,
Back, Run, Sprint``) success >= 0.9 in <= 3 min; the humanoid walk success >= 0.8 in <= 2 h.

Time is the learner's ``train_seconds``: rollouts, updates, logging and checkpoints
summed across resumes, evaluations excluded. Nothing but the clip, the run directory and
the step budget differs from ``clipsched train``: the printed train command (with
``--total-steps`` = the steps this run used) replays the same run to the same step.
Wall times depend on what else runs on the machine; the load averages are recorded.

Reports per clip the steps, updates and training minutes at the first evaluation that
reached the goal (or "not reached" with the best success and the budget used), a table
with pass/fail against the time goal, the curves (success, tracking reward per step,
episode length vs env steps), ``results.json`` (clips of earlier runs into the same
directory are kept, re-run clips replaced) and ``time_to_skill.png`` in ``--out``.

    nice -n 10 .venv/bin/python bench/bench_time_to_skill.py                  # 5 planar clips
    nice -n 10 .venv/bin/python bench/bench_time_to_skill.py --clips Run --max-minutes 5
    nice -n 10 .venv/bin/python bench/bench_time_to_skill.py --env humanoid   # the walk
    .venv/bin/python bench/bench_time_to_skill.py --env humanoid --set learning_rate=1e-4 \\
        --set desired_kl=0.02                                              # any TrainConfig field
    .venv/bin/python bench/bench_time_to_skill.py --report-only bench/results/time_to_skill/planar
    .venv/bin/python bench/bench_time_to_skill.py --from-run runs/walkA/learner0  # any train run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import time
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from learner.config import TrainConfig

logger = logging.getLogger("bench_time_to_skill")

# --------------------------------------------------------------------------------------
# Settings and goals (edit here)
# --------------------------------------------------------------------------------------

PLANAR_SETTINGS: dict[str, Any] = {"eval_every": 10}
"""Planar single-clip experts: the env's defaults (``TrainConfig.for_env``: 16 envs x 128
steps = 2,048 steps per update), an evaluation every 20,480 steps. A single-clip run is
paid its clip's raw tracking reward (z-scores exist to compare clips)."""

HUMANOID_SETTINGS: dict[str, Any] = {"eval_every": 25}
"""The humanoid walk expert: the env's defaults (fixed exploration std 0.05, gamma 0.95,
Adam 5e-5, residual PD targets, contact and pose termination), an evaluation every 51,200
steps."""

SHIPPED_WALK = "walk"
"""The humanoid walk as a shipped clip name (``learner/data/motions/humanoid3d_walk.txt``)."""
WALK_FILE = "/work/shared/data/deepmimic/humanoid3d_walk.txt"
"""The same clip as a file, used while the shipped name does not resolve."""


@dataclass(frozen=True)
class Goal:
    """What "has the skill" means for an env, and how fast it should get there."""

    success: float
    """Deterministic-evaluation success that counts as the skill."""
    minutes: float
    """Training wall time goal on this machine."""
    label: str
    settings: dict[str, Any]
    budget_minutes: float
    """Default training-time budget per clip (--max-minutes)."""


GOALS: dict[str, Goal] = {
    "planar": Goal(0.9, 3.0, "≤ 3 min", PLANAR_SETTINGS, budget_minutes=6.0),
    "humanoid": Goal(0.8, 120.0, "≤ 2 h", HUMANOID_SETTINGS, budget_minutes=180.0),
}

BENCH_FIELDS = ("clips", "log_dir", "run_name", "checkpoint_dir", "total_steps", "resume")
"""TrainConfig fields the bench sets itself (use --clips, --out, --max-steps instead)."""

RESULTS = "results.json"
PLOT = "time_to_skill.png"


def default_clips(env: str) -> list[str]:
    """The five planar clips, or the humanoid walk (shipped name, else the file path)."""
    if env == "planar":
        from learner.envs.planar import DEFAULT_CLIPS

        return list(DEFAULT_CLIPS)
    with contextlib.suppress(ImportError, AttributeError, OSError):
        from learner.clips import shipped_motion_names

        if SHIPPED_WALK in shipped_motion_names():
            return [SHIPPED_WALK]
    return [WALK_FILE]


def clip_label(clip: str) -> str:
    """A clip's name in tables and run directories (``.../humanoid3d_walk.txt`` -> ``walk``)."""
    stem = Path(clip).stem if clip.endswith((".txt", ".json", ".npz")) else clip
    stem = stem.removeprefix("humanoid3d_")
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)


# --------------------------------------------------------------------------------------
# Curves and time to skill
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    """One deterministic evaluation of one clip."""

    step: int
    update: int
    train_seconds: float
    success: float
    tracking_reward: float
    episode_length: float
    full_length: float = math.nan
    episodes: int = 0


@dataclass
class ClipResult:
    """Time to skill of one clip, with its curve."""

    clip: str
    env: str
    goal_success: float
    goal_minutes: float
    goal_label: str
    curve: list[CurvePoint]
    reached: bool = False
    steps_to_skill: int | None = None
    updates_to_skill: int | None = None
    seconds_to_skill: float | None = None
    best_success: float = 0.0
    steps_used: int = 0
    seconds_used: float = 0.0
    wall_seconds: float | None = None
    """Whole bench time for this clip: setup, training and evaluations."""
    stop_reason: str = "run"
    """goal, steps, time, interrupted, or run (read from a run's eval.jsonl)."""
    source: str = ""
    """The run directory the curve was read from."""
    command: str = ""
    train_command: str = ""
    load_average: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Reached the success goal within the time goal."""
        return (
            self.reached
            and self.seconds_to_skill is not None
            and self.seconds_to_skill <= self.goal_minutes * 60.0
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for results.json (with ``passed``; NaN becomes null)."""
        return _json_safe({**asdict(self), "passed": self.passed})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipResult:
        """Read back what ``to_dict`` wrote."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["curve"] = [
            CurvePoint(**{k: math.nan if v is None else v for k, v in point.items()})
            for point in data.get("curve", [])
        ]
        return cls(**values)


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def read_eval_log(path: Path) -> dict[str, list[CurvePoint]]:
    """The curve of each clip in an ``eval.jsonl``, in file order; bad lines are skipped.

    A line whose step is not after the previous one comes from a session resumed from an
    older checkpoint (killed between an evaluation and the next checkpoint): the lines it
    replays are dropped, as TensorBoard's ``purge_step`` does.
    """
    curves: dict[str, list[CurvePoint]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
            for name, curve in curves.items():
                curves[name] = [p for p in curve if p.step < step]
            for clip in record["clips"]:
                curves.setdefault(str(clip["clip"]), []).append(
                    CurvePoint(
                        step=step,
                        update=int(record.get("update", 0)),
                        train_seconds=float(record.get("train_seconds", math.nan)),
                        success=float(clip["success"]),
                        tracking_reward=float(clip["tracking_reward"]),
                        episode_length=float(clip["episode_length"]),
                        full_length=float(clip.get("full_length", math.nan)),
                        episodes=int(clip.get("episodes", 0)),
                    )
                )
        except (ValueError, KeyError, TypeError) as exc:  # a half-written last line, say
            logger.warning("%s:%d: skipped (%s)", path, number, exc)
    return curves


def summarize(clip: str, curve: list[CurvePoint], env: str, goal: Goal) -> ClipResult:
    """Time to skill from a curve: the first evaluation whose success reaches the goal."""
    result = ClipResult(clip, env, goal.success, goal.minutes, goal.label, list(curve))
    if not curve:
        return result
    result.best_success = max(p.success for p in curve)
    result.steps_used = curve[-1].step
    result.seconds_used = curve[-1].train_seconds
    first = next((p for p in curve if p.success >= goal.success), None)
    if first is not None:
        result.reached = True
        result.steps_to_skill = first.step
        result.updates_to_skill = first.update
        result.seconds_to_skill = first.train_seconds
    return result


# --------------------------------------------------------------------------------------
# Training until the skill
# --------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """How a bench training run ended."""

    stop_reason: str
    steps: int
    train_seconds: float
    wall_seconds: float


def train_until_skill(
    config: TrainConfig,
    goal_success: float,
    max_seconds: float,
    on_eval: typing.Callable[[int, float, list[Any]], None] | None = None,
) -> RunOutcome:
    """``learner.train.train``'s loop, stopping at the first evaluation where every clip's
    success reaches ``goal_success``, at ``config.total_steps`` or after ``max_seconds`` of
    training time. Stopping on a budget adds one evaluation if the last update had none."""
    import torch

    from learner.train import Learner

    torch.set_num_threads(1)
    started = time.perf_counter()
    reason = "steps"
    with contextlib.ExitStack() as stack:
        learner = Learner.open(config, None, None, stack)

        def evaluate() -> bool:
            skills = learner.evaluate()
            if on_eval is not None:
                on_eval(learner.global_step, learner.elapsed_train_seconds(), skills)
            return min(skill.success for skill in skills) >= goal_success

        evaluated_at = -1
        try:
            # the loop of learner.train.train, with the stop conditions added
            while learner.update_index < config.num_updates:
                rollout = learner.collect_rollout()
                batch = learner.advantages(rollout)
                stats = learner.update(batch)
                learner.log(rollout, stats)
                if config.eval_every and learner.update_index % config.eval_every == 0:
                    evaluated_at = learner.update_index
                    if evaluate():
                        reason = "goal"
                        break
                if config.checkpoint_every and learner.update_index % config.checkpoint_every == 0:
                    learner.save_checkpoint()
                if learner.elapsed_train_seconds() >= max_seconds:
                    reason = "time"
                    break
            if reason != "goal" and evaluated_at != learner.update_index and evaluate():
                reason = "goal"
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            learner.save_checkpoint()
        return RunOutcome(
            reason,
            learner.global_step,
            learner.elapsed_train_seconds(),
            time.perf_counter() - started,
        )


def train_command(config: TrainConfig, always: typing.Iterable[str] = ()) -> str:
    """The ``clipsched train`` command of a config: the fields named in ``always`` and
    every other field that differs from the defaults."""
    defaults = TrainConfig.for_env(config.env)
    keep = {"env", *always}
    parts = [".venv/bin/clipsched", "train"]
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        if value == getattr(defaults, f.name) and f.name not in keep:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif value is None:
            parts += [flag, "none"]
        elif isinstance(value, tuple):
            parts += [flag, *(str(v) for v in value)] if value else []
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` overrides: JSON values (numbers, true/false, lists), none, text."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key in BENCH_FIELDS:
            raise ValueError(f"--set {key}: set by the bench (use --clips, --out, --max-steps)")
        if text.strip().lower() in ("none", "null"):
            values[key] = None
            continue
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


def clip_config(
    env: str, clip: str, settings: dict[str, Any], runs_dir: Path, max_steps: int | None
) -> TrainConfig:
    """The single-clip expert's config for one clip."""
    return TrainConfig.for_env(env).with_overrides(
        **{"progress": False, **settings},
        clips=[clip],
        log_dir=str(runs_dir),
        run_name=clip_label(clip),
        checkpoint_dir=None,
        total_steps=max_steps or 10**12,
        resume=False,
    )


def bench_clip(
    config: TrainConfig,
    env: str,
    goal: Goal,
    max_minutes: float,
    command: str,
) -> ClipResult:
    """Train one clip in a fresh run directory until the skill or a budget; its result."""
    run_root = Path(config.log_dir) / config.run_name
    if run_root.exists():
        logger.warning("removing the earlier run %s", run_root)
        shutil.rmtree(run_root)
    label = config.run_name

    def on_eval(step: int, seconds: float, skills: list[Any]) -> None:
        text = ", ".join(
            f"success {s.success:.2f} reward {s.tracking_reward:.3f} length {s.episode_length:.0f}"
            for s in skills
        )
        print(f"  {label}: step {step:,} ({seconds / 60:.2f} min): {text}", flush=True)

    print(f"{label}: training ({config.batch_size:,} steps per update) ...", flush=True)
    outcome = train_until_skill(config, goal.success, max_minutes * 60.0, on_eval)
    curves = read_eval_log(config.run_dir / "eval.jsonl")
    name = next(iter(curves), label)
    result = summarize(name, curves.get(name, []), env, goal)
    result.stop_reason = outcome.stop_reason
    result.steps_used = outcome.steps
    result.seconds_used = outcome.train_seconds
    result.wall_seconds = outcome.wall_seconds
    result.source = str(config.run_dir)
    result.command = command
    result.train_command = train_command(
        config.with_overrides(total_steps=outcome.steps),
        (*goal.settings, "env", "clips", "total_steps", "log_dir", "run_name", "resume"),
    )
    result.load_average = [round(x, 2) for x in os.getloadavg()]
    result.config = config.to_dict()
    return result


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------


def _minutes(seconds: float | None) -> str:
    """``12 s``, ``2.4 min``, ``1.52 h``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def format_table(results: list[ClipResult]) -> str:
    """Markdown table: goal, steps and training time to skill, best success, budget used,
    the bench's wall time for the clip (setup and evaluations included), result."""
    lines = [
        "| clip | env | success goal | time goal | env steps to skill | training time to skill "
        "| evaluations | best success | budget used (steps, training time) | wall time "
        "| stopped | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        if r.reached:
            steps = f"{r.steps_to_skill:,}"
            seconds = _minutes(r.seconds_to_skill)
        else:
            steps, seconds = "not reached", "—"
        result = "pass" if r.passed else ("fail (too slow)" if r.reached else "fail")
        wall = "—" if r.wall_seconds is None else _minutes(r.wall_seconds)
        lines.append(
            f"| {r.clip} | {r.env} | ≥ {r.goal_success:g} | {r.goal_label} | {steps} | {seconds} "
            f"| {len(r.curve)} | {r.best_success:.2f} | {r.steps_used:,}, "
            f"{_minutes(r.seconds_used)} | {wall} | {r.stop_reason} | {result} |"
        )
    return "\n".join(lines)


def format_curve(result: ClipResult, max_rows: int) -> str:
    """One clip's curve as a Markdown table (thinned evenly to ``max_rows``; 0 = all)."""
    curve = result.curve
    keep = range(len(curve))
    if max_rows and len(curve) > max_rows:
        stride = (len(curve) - 1) / (max_rows - 1)
        keep = sorted({round(i * stride) for i in range(max_rows)})
        if result.reached:
            first = next(i for i, p in enumerate(curve) if p.success >= result.goal_success)
            keep = sorted({*keep, first})
    lines = [
        f"Curve of {result.clip} ({len(curve)} evaluation{'' if len(curve) == 1 else 's'}"
        + (f", {len(keep)} shown" if len(keep) < len(curve) else "")
        + ")",
        "",
        "| update | env steps | training time | success | tracking reward / step "
        "| episode length | full length |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i in keep:
        p = curve[i]
        mark = " ←" if result.reached and p.step == result.steps_to_skill else ""
        lines.append(
            f"| {p.update} | {p.step:,} | {_minutes(p.train_seconds)} | {p.success:.2f}{mark} "
            f"| {p.tracking_reward:.3f} | {p.episode_length:.0f} | {p.full_length:.2f} |"
        )
    return "\n".join(lines)


def plot(results: list[ClipResult], path: Path) -> Path:
    """4 panels: success, episode length, tracking reward per step vs env steps; success
    vs training minutes (goal lines dashed, the first evaluation at the goal marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    (ax_success, ax_length), (ax_reward, ax_time) = axes
    for r in results:
        if not r.curve:
            continue
        steps = [p.step for p in r.curve]
        minutes = [p.train_seconds / 60 for p in r.curve]
        success = [p.success for p in r.curve]
        (line,) = ax_success.plot(steps, success, marker=".", label=r.clip)
        color = line.get_color()
        ax_length.plot(steps, [p.episode_length for p in r.curve], marker=".", color=color)
        ax_reward.plot(steps, [p.tracking_reward for p in r.curve], marker=".", color=color)
        ax_time.plot(minutes, success, marker=".", color=color, label=r.clip)
        first = next((p for p in r.curve if p.success >= r.goal_success), None)
        if first is not None:  # the first evaluation at the goal
            ring = {"color": color, "marker": "o", "ms": 10, "mfc": "none", "ls": "none"}
            ax_success.plot([first.step], [first.success], **ring)
            ax_time.plot([first.train_seconds / 60], [first.success], **ring)
    goals = sorted({(r.goal_success, r.goal_minutes) for r in results})
    for success, minutes in goals:
        ax_success.axhline(success, color="grey", ls="--", lw=1)
        ax_time.axhline(success, color="grey", ls="--", lw=1)
        ax_time.axvline(minutes, color="grey", ls=":", lw=1)
    ax_success.set(title="deterministic success", xlabel="env steps", ylabel="success")
    ax_length.set(title="episode length", xlabel="env steps", ylabel="control steps")
    ax_reward.set(title="tracking reward per step", xlabel="env steps", ylabel="reward")
    ax_time.set(title="success vs training time", xlabel="training minutes", ylabel="success")
    for ax in (ax_success, ax_time):
        ax.set_ylim(-0.03, 1.03)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    if any(r.curve for r in results):
        ax_success.legend(loc="lower right")
    envs = ", ".join(sorted({r.env for r in results}))
    fig.suptitle(f"Time to skill ({envs}): single-clip experts, deterministic evaluation")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(
    results: list[ClipResult], out: Path, curve_rows: int, header: str, note: str = ""
) -> str:
    """Print table, curves and commands; write results.json (with ``header``) and the plot
    into ``out``. ``note`` is printed under the header only."""
    commands = list(dict.fromkeys(r.command for r in results if r.command))
    train_commands = [f"- {r.clip}: `{r.train_command}`" for r in results if r.train_command]
    lines = [header, *([note] if note else []), "", format_table(results), ""]
    for r in results:
        lines += [format_curve(r, curve_rows), ""]
    if train_commands:
        lines += ["Equivalent `clipsched train` runs (to the steps used):", *train_commands, ""]
    lines += [f"Command: `{c}`" for c in commands]
    if any(r.source for r in results):
        lines += [f"Runs: {', '.join(sorted({r.source for r in results if r.source}))}"]
    write_results(results, out, header)
    png = plot(results, out / PLOT)
    lines += [f"Results: {out / RESULTS}", f"Plot: {png}"]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    return text


def write_results(results: list[ClipResult], out: Path, header: str) -> Path:
    """``out/results.json`` (written atomically): header, machine and the clip results."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "header": header,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "clips": [r.to_dict() for r in results],
    }
    tmp = out / f".{RESULTS}.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / RESULTS)
    return out / RESULTS


def load_results(out: Path) -> tuple[list[ClipResult], str]:
    """The clip results and header in ``out/results.json`` ([] and "" if there is none)."""
    path = out / RESULTS
    if not path.is_file():
        return [], ""
    data = json.loads(path.read_text(encoding="utf-8"))
    results = [ClipResult.from_dict(entry) for entry in data.get("clips", [])]
    return results, str(data.get("header", ""))


def merge(earlier: list[ClipResult], new: list[ClipResult]) -> list[ClipResult]:
    """Earlier results with the re-run (env, clip) entries replaced and new ones added,
    in the default clip order (the five planar clips, then the rest by name)."""
    by_key = {(r.env, r.clip): r for r in earlier}
    by_key.update({(r.env, r.clip): r for r in new})
    from learner.envs.planar import DEFAULT_CLIPS

    order = {name: i for i, name in enumerate(DEFAULT_CLIPS)}
    return sorted(by_key.values(), key=lambda r: (r.env, order.get(r.clip, len(order)), r.clip))


def find_eval_log(path: Path) -> Path:
    """eval.jsonl of a run: the file, <dir>/eval.jsonl or the one <dir>/*/eval.jsonl."""
    if path.is_file():
        return path
    if (path / "eval.jsonl").is_file():
        return path / "eval.jsonl"
    found = sorted(path.glob("*/eval.jsonl"))
    if len(found) == 1:
        return found[0]
    if found:
        raise FileNotFoundError(f"several eval.jsonl under {path}: pass one learner directory")
    raise FileNotFoundError(f"no eval.jsonl in {path} (train with --eval-every N)")


def run_env(log: Path) -> str | None:
    """The env of the run that wrote ``log``, from its checkpoint's config (None if unknown)."""
    checkpoint = log.parent / "checkpoints" / "latest.pt"
    if not checkpoint.is_file():
        return None
    try:
        import torch

        saved = torch.load(checkpoint, weights_only=True, map_location="cpu")
        return str(saved["config"]["env"])
    except Exception as exc:  # a checkpoint being replaced, an old format: fall back
        logger.warning("could not read %s: %s", checkpoint, exc)
        return None


def from_run(log: Path, env: str, goal: Goal, command: str) -> list[ClipResult]:
    """Time to skill of every clip in a ``clipsched train`` run's eval.jsonl."""
    results = []
    for clip, curve in read_eval_log(log).items():
        result = summarize(clip, curve, env, goal)
        result.source = str(log.parent)
        result.command = command
        results.append(result)
    return results


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The bench's flags."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", choices=sorted(GOALS), default=None, help="default planar")
    parser.add_argument(
        "--clips",
        nargs="*",
        help="clips to train (names or, humanoid, clip files); default: the five planar "
        "clips / the humanoid walk",
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="env-step budget per clip (default none)"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="training-time budget per clip (default 2x the planar goal, 1.5x the humanoid's)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrainConfig field of the expert settings (repeatable), e.g. "
        "--set learning_rate=1e-4 --set desired_kl=0.02 --set eval_episodes=16",
    )
    parser.add_argument("--goal-success", type=float, default=None, help="override the goal")
    parser.add_argument("--goal-minutes", type=float, default=None, help="override the goal")
    parser.add_argument(
        "--out", type=Path, default=None, help="default bench/results/time_to_skill/<env>/"
    )
    parser.add_argument(
        "--report-only",
        type=Path,
        metavar="DIR",
        help="re-print the table and replot from DIR/results.json; no training",
    )
    parser.add_argument(
        "--from-run",
        type=Path,
        metavar="RUN_DIR",
        help="report the time to skill of a clipsched train run's eval.jsonl; no training",
    )
    parser.add_argument(
        "--curve-rows", type=int, default=30, help="curve rows printed per clip (0 = all)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train (or read) the clips, print the report and write results.json and the plot."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    here = Path(__file__).resolve()
    with contextlib.suppress(ValueError):
        here = here.relative_to(Path.cwd())
    command = shlex.join([".venv/bin/python", str(here), *args_list])

    def goal_for(env: str) -> Goal:
        base = GOALS[env]
        success = base.success if args.goal_success is None else args.goal_success
        minutes = base.minutes if args.goal_minutes is None else args.goal_minutes
        label = base.label if args.goal_minutes is None else f"≤ {minutes:g} min"
        return Goal(success, minutes, label, base.settings, base.budget_minutes)

    if args.report_only is not None:
        results, header = load_results(args.report_only)
        if not results:
            sys.stderr.write(f"error: no {RESULTS} in {args.report_only}\n")
            return 2
        note = f"(re-read from {args.report_only / RESULTS})"
        report(results, args.report_only, args.curve_rows, header or "Time to skill", note)
        return 0

    if args.from_run is not None:
        try:
            log = find_eval_log(args.from_run)
        except FileNotFoundError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        env = args.env or run_env(log) or "planar"
        results = from_run(log, env, goal_for(env), command)
        if not results:
            sys.stderr.write(f"error: no evaluations in {log}\n")
            return 2
        out = args.out or Path("bench/results/time_to_skill") / env / f"from-{_run_label(log)}"
        report(results, out, args.curve_rows, f"Time to skill of the run {log.parent}")
        return 0

    env = args.env or "planar"
    goal = goal_for(env)
    out = args.out or Path("bench/results/time_to_skill") / env
    try:
        settings = {**goal.settings, **parse_set(args.set)}
        clips = args.clips or default_clips(env)
        configs = [clip_config(env, c, settings, out / "runs", args.max_steps) for c in clips]
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    budget = goal.budget_minutes if args.max_minutes is None else args.max_minutes
    steps_budget = f"{args.max_steps:,}" if args.max_steps else "∞"
    header = (
        f"Time to skill, env `{env}`, single-clip experts, goal: deterministic success ≥ "
        f"{goal.success:g} ({configs[0].eval_episodes} episodes, evaluated every "
        f"{configs[0].eval_every} updates of {configs[0].batch_size:,} steps) in {goal.label} "
        f"of training; budget per clip {steps_budget} steps / {budget:g} min of training; "
        f"{os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} at the start"
    )
    print(header, flush=True)
    new: list[ClipResult] = []
    for config in configs:
        new.append(bench_clip(config, env, goal, budget, command))
        if len(configs) > 1:
            print(format_table(new[-1:]), flush=True)
        write_results(merge(load_results(out)[0], new[-1:]), out, header)  # keep finished clips
        if new[-1].stop_reason == "interrupted":
            break
    report(merge(load_results(out)[0], new), out, args.curve_rows, header)
    return 0


def _run_label(log: Path) -> str:
    """``runs/walkA/learner0/eval.jsonl`` -> ``walkA-learner0``."""
    learner = log.resolve().parent
    return clip_label(f"{learner.parent.name}-{learner.name}")


if __name__ == "__main__":
    raise SystemExit(main())
