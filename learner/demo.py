"""``clipsched demo``: a scheduler and two learners sharing one run, for a bounded time.

The README's first command. It starts a scheduler on a SQLite file, creates a run with
the design-note preset (§8) and starts two ``clipsched train`` processes that attach to
it by name. Humanoid (default): the run ``three-clip`` on the shipped DeepMimic clips
walk, jog and run, the learners starting from the shipped walk checkpoint
(``learner/data/checkpoints``, trained by ``clipsched train``; ``--from-scratch`` skips
it). Planar: the run ``five-clip`` (Idle, Walk, Back, Run, Sprint) from scratch. While
they train it shows one progress line for the whole run (env steps/s, controller
updates) and the per-clip ``usage`` against ``target_usage``, read from the scheduler's
run state. At the end it stops the learners (one SIGINT each: they finish their update
and checkpoint), prints the run state table and a skill table -- per clip, the tracking
reward per step and the success of the first and last fifth of the run's episodes, and a
deterministic evaluation of learner0's final policy -- renders learner0's policy beside
the reference (a filmstrip PNG and a GIF), and says where everything is.

Every process it starts is its own child, ended by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clipsched.client.http import SchedulerClient, SchedulerError
from learner.config import FIVE_CLIPS

logger = logging.getLogger(__name__)

DEMO_CLIPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "planar": ("five-clip", FIVE_CLIPS),
    "humanoid": ("three-clip", ("walk", "jog", "run")),
}
"""Run name and clips of the demo on each env."""


def shipped_checkpoint() -> Path | None:
    """The shipped humanoid walk checkpoint (``learner/data/checkpoints``), if installed."""
    path = Path(__file__).resolve().parent / "data" / "checkpoints" / "humanoid_walk.pt"
    return path if path.is_file() else None


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; every field is a ``clipsched demo`` flag."""

    minutes: float = 3.0
    """Wall-clock budget of the training phase."""
    env: str = "humanoid"
    """Learner env: ``humanoid`` (MuJoCo DeepMimic humanoid) or ``planar`` (fast 2-D walker)."""
    learners: int = 2
    """How many learner processes share the run."""
    num_envs: int = 8
    """Vectorised envs per learner."""
    workdir: Path = Path("clipsched-demo")
    """Where the database, TensorBoard logs, checkpoints and process logs go."""
    port: int = 0
    """Scheduler port on 127.0.0.1 (0 picks a free one)."""
    update_every_steps: int = 10_000
    """Controller interval for the demo (the preset's 50k is long for a few minutes)."""
    from_scratch: bool = False
    """Humanoid: start from random weights instead of the shipped walk checkpoint."""
    render: bool = True
    """Render learner0's final policy beside the reference at the end."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> list[str]:
    """The ``clipsched`` command line, run with this interpreter."""
    return [sys.executable, "-m", "scheduler_service", *args]


@contextlib.contextmanager
def _child(cmd: Sequence[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` with its output in ``log_path``; on exit, SIGINT it, then SIGKILL."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(client: SchedulerClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the scheduler exited with {proc.returncode}; see {log}")
        with contextlib.suppress(SchedulerError):
            client.health()
            return
        time.sleep(0.2)
    raise RuntimeError(f"the scheduler did not answer within 60 s; see {log}")


def _usage_line(state: dict[str, Any]) -> str:
    """``Idle 0.19/0.20  Walk ...``: usage against target_usage per clip."""
    return "  ".join(
        f"{c['name']} {c.get('usage', 0.0):.2f}/{c.get('target_usage', 0.0):.2f}"
        for c in state.get("clips", ())
    )


def run_demo(config: DemoConfig) -> int:
    """Run the demo; return the exit code."""
    from scheduler_service.cli import format_run_state

    workdir = config.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run_name, clips = DEMO_CLIPS[config.env]
    init_from = None if config.from_scratch or config.env != "humanoid" else shipped_checkpoint()
    port = config.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    db = workdir / "scheduler.db"
    logs = workdir / "logs"
    serve = _cli("serve", "--host", "127.0.0.1", "--port", str(port), "--database-url",
                 f"sqlite:///{db}")  # fmt: skip
    with contextlib.ExitStack() as stack:
        scheduler = stack.enter_context(_child(serve, logs / "scheduler.log"))
        client = stack.enter_context(SchedulerClient(url, run_name, learner_id="demo"))
        _wait_healthy(client, scheduler, logs / "scheduler.log")
        client.create_run(
            {
                "name": run_name,
                "clips": [{"name": name} for name in clips],
                "preset": "design-note",
                "strategy": {"kind": "controller", "update_every_steps": config.update_every_steps},
            },
            exist_ok=True,
        )
        print(f"scheduler   {url}   (database {db})")
        print(f"dashboard   {url}/dashboard/#run={run_name}")
        print(f"metrics     {url}/metrics")
        print(f"run state   {url}/runs/{run_name}")
        print(f"API docs    {url}/docs")
        learners = []
        for i in range(config.learners):
            name = f"learner{i}"
            cmd = _cli(
                "train", "--env", config.env, "--scheduler-url", url, "--run-name", run_name,
                "--clips", ",".join(clips),
                "--learner-id", name, "--seed", str(i), "--num-envs", str(config.num_envs),
                "--total-steps", "1000000000", "--log-dir", str(workdir / "tensorboard" / name),
                "--checkpoint-dir", str(workdir / "checkpoints" / name), "--no-progress",
                *(["--init-from", str(init_from)] if init_from else []),
            )  # fmt: skip
            learners.append(stack.enter_context(_child(cmd, logs / f"{name}.log")))
        start = f", starting from {init_from}" if init_from else ", from scratch"
        print(f"learners    {config.learners} x {config.env}{start}; logs in {logs}")
        _watch(client, learners, config.minutes * 60.0)
        for proc in learners:  # stop learners first so their last outcomes land
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in learners:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        state = client.run_state()
        print()
        print(format_run_state(state))
        failed = [p.returncode for p in learners if p.returncode not in (0, 130, -2)]
    print()
    checkpoint = workdir / "checkpoints" / "learner0" / "latest.pt"
    print(skill_table(db, run_name, checkpoint, config.num_envs))
    if config.render and checkpoint.is_file():
        _render(checkpoint, workdir / "render", clips[0])
    print(f"TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}")
    print(f"Checkpoints: {workdir / 'checkpoints'}")
    print(f"Run state:   {db} (restart with: clipsched serve --database-url sqlite:///{db})")
    if failed:
        print(f"a learner exited with {failed}; see {logs}", file=sys.stderr)
        return 1
    return 0


def _first_last_fifth(rows: list[tuple[int, int, float, float]], k: int) -> tuple[str, str, int]:
    """Tracking reward per step and success of the first and last fifth of one clip's
    episodes, as "a -> b" strings, and the episode count."""
    mine = [r for r in rows if r[0] == k]
    if len(mine) < 2:
        return "-", "-", len(mine)
    fifth = max(1, len(mine) // 5)

    def stats(part: list[tuple[int, int, float, float]]) -> tuple[float, float]:
        steps = sum(r[1] for r in part)
        return sum(r[2] for r in part) / max(steps, 1), sum(r[3] for r in part) / len(part)

    (r0, s0), (r1, s1) = stats(mine[:fifth]), stats(mine[-fifth:])
    return f"{r0:.3f} -> {r1:.3f}", f"{s0:.2f} -> {s1:.2f}", len(mine)


def skill_table(db: Path, run_name: str, checkpoint: Path, num_envs: int) -> str:
    """Per clip: how training moved (first vs last fifth of the run's episodes, from the
    scheduler's database) and learner0's final policy evaluated deterministically."""
    import sqlite3

    from learner.evaluate import evaluate, load_policy

    with contextlib.closing(sqlite3.connect(db)) as con:
        names = [n for (n,) in con.execute(
            "SELECT c.name FROM clips c JOIN runs r ON r.id = c.run_id WHERE r.name = ? "
            "ORDER BY c.clip_id", (run_name,))]  # fmt: skip
        rows = list(con.execute(
            "SELECT o.clip_id, o.steps, o.episode_return, o.success FROM outcomes o "
            "JOIN runs r ON r.id = o.run_id WHERE r.name = ? ORDER BY o.received_at, o.rowid",
            (run_name,)))  # fmt: skip
    skills = {}
    if checkpoint.is_file():
        skills = {s.clip: s for s in evaluate(load_policy(checkpoint), 8, num_envs)}
    header = ("clip", "episodes", "tracking/step first->last", "success first->last",
              "eval success", "eval tracking/step", "eval length")  # fmt: skip
    table = [header]
    for k, name in enumerate(names):
        reward, success, count = _first_last_fifth(rows, k)
        skill = skills.get(name)
        table.append((
            name, str(count), reward, success,
            f"{skill.success:.2f}" if skill else "-",
            f"{skill.tracking_reward:.3f}" if skill else "-",
            f"{skill.episode_length:.0f}" if skill else "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = (
        "skill: run episodes (first fifth -> last fifth, exploring) and learner0's final "
        "policy (deterministic, 8 episodes per clip)"
    )
    return "\n".join([title, *lines])


def _render(checkpoint: Path, out_dir: Path, clip: str) -> None:
    """Filmstrip and GIF of ``checkpoint`` on ``clip`` beside the reference."""
    from learner.render import RenderError, render_checkpoint

    try:
        result = render_checkpoint(checkpoint, out_dir, clip=clip, seconds=6.0, fps=10.0)
    except (RenderError, OSError, RuntimeError) as exc:
        print(f"render skipped: {exc}")
        return
    print(f"filmstrip   {result.png}")
    print(f"animation   {result.gif}")


def _wait_for_first_steps(
    client: SchedulerClient, learners: list[subprocess.Popen[bytes]], timeout: float
) -> None:
    """Return once the run counts env steps, every learner has exited, or ``timeout``."""
    deadline = time.monotonic() + timeout
    print("waiting for the learners' first episodes ...", flush=True)
    while time.monotonic() < deadline and any(p.poll() is None for p in learners):
        with contextlib.suppress(SchedulerError):
            if int(client.run_state().get("totals", {}).get("steps", 0)) > 0:
                return
        time.sleep(1.0)


def _watch(
    client: SchedulerClient, learners: list[subprocess.Popen[bytes]], seconds: float
) -> None:
    """Show run-wide progress until ``seconds`` pass, Ctrl-C, or every learner exits.

    The clock starts when the learners' first steps reach the scheduler (start-up, with
    its imports and env building, takes seconds on a busy machine), or after 120 s.
    """
    _wait_for_first_steps(client, learners, timeout=120.0)
    start = time.monotonic()
    last_steps, last_time = 0, start
    with tqdm(total=int(seconds), unit="s", desc="demo", dynamic_ncols=True) as bar:
        try:
            while time.monotonic() - start < seconds:
                time.sleep(2.0)
                if all(p.poll() is not None for p in learners):
                    logger.error("every learner has exited")
                    break
                try:
                    state = client.run_state()
                except SchedulerError as exc:
                    bar.write(f"run state unavailable: {exc}")
                    continue
                now = time.monotonic()
                totals = state.get("totals", {})
                steps = int(totals.get("steps", 0))
                rate = (steps - last_steps) / max(now - last_time, 1e-9)
                last_steps, last_time = steps, now
                bar.n = min(int(now - start), int(seconds))
                bar.set_postfix_str(
                    f"steps {steps:,} ({rate:,.0f}/s) updates {totals.get('updates', 0)} | "
                    + _usage_line(state)
                )
        except KeyboardInterrupt:
            bar.write("interrupted: stopping the learners")


def add_demo_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the root CLI."""
    parser = subparsers.add_parser(
        "demo",
        help="a scheduler and two learners sharing the five-clip run, for a few minutes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = DemoConfig()
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--env", choices=("humanoid", "planar"), default=defaults.env)
    parser.add_argument("--learners", type=int, default=defaults.learners)
    parser.add_argument("--num-envs", type=int, default=defaults.num_envs)
    parser.add_argument("--workdir", type=Path, default=defaults.workdir)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--update-every-steps", type=int, default=defaults.update_every_steps)
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="humanoid: start from random weights, not the shipped walk checkpoint",
    )
    parser.add_argument("--no-render", dest="render", action="store_false",
                        help="skip the filmstrip of the final policy")  # fmt: skip
    parser.set_defaults(func=_run_from_args)


def _run_from_args(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.learners < 1 or args.num_envs < 1:
        print("--minutes, --learners and --num-envs must be positive", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run_demo(
        DemoConfig(
            minutes=args.minutes,
            env=args.env,
            learners=args.learners,
            num_envs=args.num_envs,
            workdir=args.workdir,
            port=args.port,
            update_every_steps=args.update_every_steps,
            from_scratch=args.from_scratch,
            render=args.render,
        )
    )
