"""``clipsched demo``: a scheduler and two learners sharing one run, for a bounded time.

The README's first command. It starts a scheduler on a SQLite file, creates the run
``five-clip`` (Idle, Walk, Back, Run, Sprint) with the design-note preset (§8), and starts
two ``clipsched train`` processes that attach to that run by name. While they train it
shows one progress line for the whole run (env steps/s, controller updates) and the
per-clip ``usage`` against ``target_usage``, read from the scheduler's run state. At the
end it stops the learners (they checkpoint), prints the run state table, and says where
the TensorBoard logs, checkpoints and the scheduler database are.

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

from learner.client import SchedulerClient, SchedulerError

logger = logging.getLogger(__name__)

RUN_NAME = "five-clip"
FIVE_CLIPS = ("Idle", "Walk", "Back", "Run", "Sprint")


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
    port = config.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    db = workdir / "scheduler.db"
    logs = workdir / "logs"
    serve = _cli("serve", "--host", "127.0.0.1", "--port", str(port), "--database-url",
                 f"sqlite:///{db}")  # fmt: skip
    with contextlib.ExitStack() as stack:
        scheduler = stack.enter_context(_child(serve, logs / "scheduler.log"))
        client = stack.enter_context(SchedulerClient(url, RUN_NAME, learner_id="demo"))
        _wait_healthy(client, scheduler, logs / "scheduler.log")
        client.create_run(
            {
                "name": RUN_NAME,
                "clips": [{"name": name} for name in FIVE_CLIPS],
                "preset": "design-note",
                "strategy": {"kind": "controller", "update_every_steps": config.update_every_steps},
            },
            exist_ok=True,
        )
        print(f"scheduler   {url}   (database {db})")
        print(f"dashboard   {url}/dashboard/#run={RUN_NAME}")
        print(f"metrics     {url}/metrics")
        print(f"run state   {url}/runs/{RUN_NAME}")
        print(f"API docs    {url}/docs")
        learners = []
        for i in range(config.learners):
            name = f"learner{i}"
            cmd = _cli(
                "train", "--env", config.env, "--scheduler-url", url, "--run-name", RUN_NAME,
                "--learner-id", name, "--seed", str(i), "--num-envs", str(config.num_envs),
                "--total-steps", "1000000000", "--log-dir", str(workdir / "tensorboard" / name),
                "--checkpoint-dir", str(workdir / "checkpoints" / name), "--no-progress",
            )  # fmt: skip
            learners.append(stack.enter_context(_child(cmd, logs / f"{name}.log")))
        print(f"learners    {config.learners} x {config.env}, logs in {logs}")
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
    print(f"TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}")
    print(f"Checkpoints: {workdir / 'checkpoints'}")
    print(f"Run state:   {db} (restart with: clipsched serve --database-url sqlite:///{db})")
    if failed:
        print(f"a learner exited with {failed}; see {logs}", file=sys.stderr)
        return 1
    return 0


def _watch(
    client: SchedulerClient, learners: list[subprocess.Popen[bytes]], seconds: float
) -> None:
    """Show run-wide progress until ``seconds`` pass, Ctrl-C, or every learner exits."""
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
        )
    )
