"""The ``clipsched`` command line: serve the scheduler, manage runs and targets over REST.

``clipsched serve`` starts the service; ``runs`` and ``targets`` are thin wrappers over
the REST API through ``clipsched.client.SchedulerClient`` (``--url`` defaults to
``$CLIPSCHED_URL``, ``--token`` to ``$CLIPSCHED_TOKEN``). The learner's commands
(``train``, ``demo``, ``experiment``, ``render``, ``clips``) are listed in
``LEARNER_COMMANDS``; a command's module is imported only when that command runs, so
``serve``, ``runs`` and ``--help`` work with the core install (no torch, MuJoCo,
TensorBoard or matplotlib), and a learner command without the ``learner`` extra says how
to install it. Every handler is ``args.func(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsched.client import SchedulerClient

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
LEARNER_COMMANDS: Mapping[str, tuple[str, str]] = {
    "train": ("learner.cli:add_train_command", "train a multi-clip imitation policy with PPO"),
    "demo": (
        "learner.demo:add_demo_command",
        "a scheduler and two learners sharing one run, for a few minutes",
    ),
    "experiment": ("learner.collapse:add_experiment_command", "reproducible experiments"),
    "render": (
        "learner.render:add_render_command",
        "filmstrip PNG and GIF of a checkpoint's policy beside its reference clip",
    ),
    "clips": (
        "learner.clip_library:add_clips_command",
        "reference motion clips available to the learner's envs",
    ),
}
"""Commands of the ``learner`` extra: (``module:function`` that adds the subparser, help)."""
LEARNER_EXTRA = 'pip install "clip-scheduler[learner]"'
LEARNER_EXTRA_MODULES = frozenset(
    {"torch", "mujoco", "gymnasium", "tensorboard", "matplotlib", "tqdm", "PIL"}
)
"""Top-level modules of the learner extra's packages."""

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def format_cell(value: Any) -> str:
    """One table cell: floats to 3 decimals, None as '-', bools as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: text columns left-aligned, numeric columns right-aligned."""
    cells = [[format_cell(v) for v in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[j], int | float) or row[j] is None for row in rows)
        for j in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[j]) for row in cells)]) for j, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _kind(value: Any) -> Any:
    """``strategy`` / ``aggregation`` as their kind, whether a dict or a plain string."""
    return value.get("kind") if isinstance(value, Mapping) else value


def format_run_state(state: Mapping[str, Any]) -> str:
    """``runs show``: a header, one row per clip, and the attached learners."""
    totals = state.get("totals") or {}
    header = (
        f"run {state.get('name')}  version {state.get('state_version')}"
        f"  strategy {_kind(state.get('strategy'))}"
        f"  aggregation {_kind(state.get('aggregation'))}"
        f"{'  PAUSED' if state.get('paused') else ''}\n"
        f"episodes {totals.get('episodes', 0)}  steps {totals.get('steps', 0)}"
        f"  updates {totals.get('updates', 0)}"
    )
    clip_headers = (
        "clip", "group", "target_usage", "usage", "clip_prob", "reward_weight", "success",
        "episodes",
    )  # fmt: skip
    clip_rows = [
        [
            c.get("name"),
            c.get("group"),
            c.get("target_usage"),
            c.get("usage"),
            c.get("clip_prob"),
            c.get("reward_weight"),
            c.get("success"),
            c.get("episodes"),
        ]
        for c in state.get("clips", ())
    ]
    parts = [header, "", format_table(clip_headers, clip_rows)]
    learners = state.get("learners") or []
    if learners:
        learner_rows = [
            [
                entry.get("learner_id"),
                entry.get("episodes"),
                entry.get("steps"),
                entry.get("last_seen"),
                entry.get("stale"),
            ]
            for entry in learners
        ]
        parts += [
            "",
            format_table(("learner", "episodes", "steps", "last_seen", "stale"), learner_rows),
        ]
    return "\n".join(parts)


def format_run_list(runs: Sequence[Mapping[str, Any]]) -> str:
    """``runs list``: one row per run."""
    rows = []
    for run in runs:
        clips = run.get("clip_count", run.get("num_clips", run.get("clips")))
        if isinstance(clips, list):
            clips = len(clips)
        totals = run.get("totals") or {}
        rows.append(
            [
                run.get("name"),
                clips,
                _kind(run.get("strategy")),
                run.get("state_version"),
                totals.get("episodes"),
                totals.get("steps"),
            ]
        )
    return format_table(("run", "clips", "strategy", "version", "episodes", "steps"), rows)


# --------------------------------------------------------------------------------------
# Argument parsing helpers
# --------------------------------------------------------------------------------------


def split_list(text: str) -> list[str]:
    """``"Idle, Walk,Run"`` -> ``["Idle", "Walk", "Run"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_assignments(items: Sequence[str]) -> dict[str, float]:
    """``["Idle=0.2,Walk=0.25", "Run=0.1"]`` -> ``{"Idle": 0.2, "Walk": 0.25, "Run": 0.1}``."""
    values: dict[str, float] = {}
    for item in items:
        for part in split_list(item):
            name, sep, number = part.partition("=")
            if not sep or not name.strip():
                raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {part!r}")
            try:
                value = float(number)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{part!r}: {number!r} is not a number") from exc
            if not math.isfinite(value):
                raise argparse.ArgumentTypeError(f"{part!r}: the value must be finite")
            values[name.strip()] = value
    return values


def build_run_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /runs`` body from ``runs create`` flags (over ``--from-file`` if given)."""
    spec: dict[str, Any] = {}
    if args.from_file:
        spec = json.loads(Path(args.from_file).read_text())
        if not isinstance(spec, dict):
            raise ValueError(f"{args.from_file} must hold a JSON object")
    spec["name"] = args.name
    if args.clips:
        names = split_list(args.clips)
        groups = _groups(names, args.groups)
        spec["clips"] = [
            {"name": n, **({"group": groups[n]} if n in groups else {})} for n in names
        ]
    elif args.groups:
        raise ValueError("--groups needs --clips")
    if "clips" not in spec:
        raise ValueError("give --clips or a --from-file spec with clips")
    if args.preset:
        spec["preset"] = args.preset
    if args.strategy:
        strategy = spec.get("strategy")
        base = dict(strategy) if isinstance(strategy, dict) else {}
        spec["strategy"] = {**base, "kind": args.strategy}
    if args.targets:
        spec["target_usage"] = parse_assignments(args.targets)
    if args.group_targets:
        spec["target_usage_by_group"] = parse_assignments(args.group_targets)
    return spec


def _groups(names: Sequence[str], text: str | None) -> dict[str, str]:
    """``--groups``: either ``Walk=gait,Run=gait`` or one group per clip in clip order."""
    if not text:
        return {}
    parts = split_list(text)
    if all("=" in p for p in parts):
        pairs = (p.split("=", 1) for p in parts)
        mapping = {clip.strip(): group.strip() for clip, group in pairs}
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ValueError(f"--groups names unknown clips: {', '.join(unknown)}")
        return mapping
    if len(parts) != len(names):
        raise ValueError(f"--groups has {len(parts)} entries for {len(names)} clips")
    return dict(zip(names, parts, strict=True))


# --------------------------------------------------------------------------------------
# Command handlers
# --------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> SchedulerClient:
    from clipsched.client import SchedulerClient

    return SchedulerClient(args.url, None, learner_id="clipsched-cli", token=args.token)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the scheduler service until interrupted."""
    from scheduler_service.config import Settings
    from scheduler_service.server import serve

    overrides: dict[str, Any] = {"host": args.host, "port": args.port}
    if args.database_url:
        overrides["database_url"] = args.database_url
    serve(Settings(**{k: v for k, v in overrides.items() if v is not None}))
    return 0


def cmd_runs_create(args: argparse.Namespace) -> int:
    """Create a run and show its state."""
    try:
        spec = build_run_spec(args)
    except (ValueError, OSError, argparse.ArgumentTypeError) as exc:
        raise _UsageError(str(exc)) from exc
    with _client(args) as client:
        state = client.create_run(spec, exist_ok=args.exist_ok)
    _write(_json(state) if args.json else format_run_state(state))
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    """List the runs of the scheduler."""
    with _client(args) as client:
        runs = client.list_runs()
    _write(_json(runs) if args.json else format_run_list(runs))
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    """Show one run: usage against target per clip, learners, totals."""
    with _client(args) as client:
        state = client.run_state(args.name)
    _write(_json(state) if args.json else format_run_state(state))
    return 0


def cmd_targets_set(args: argparse.Namespace) -> int:
    """Override target usage per clip (or per group) of a live run."""
    try:
        targets = parse_assignments(args.assignments)
    except argparse.ArgumentTypeError as exc:
        raise _UsageError(str(exc)) from exc
    with _client(args) as client:
        answer = client.set_targets(
            targets, by_group=args.group, if_match=args.if_match, run=args.name
        )
        if args.json:
            _write(_json(answer))
        elif isinstance(answer, Mapping) and "clips" in answer:
            _write(format_run_state(answer))
        else:
            _write(format_run_state(client.run_state(args.name)))
    return 0


class _UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""


# --------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------


def _rest_options() -> argparse.ArgumentParser:
    """``--url``, ``--token`` and ``--json``, shared by every REST command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--url",
        default=os.environ.get("CLIPSCHED_URL", DEFAULT_URL),
        help="scheduler URL (default: $CLIPSCHED_URL or %(default)s)",
    )
    parent.add_argument(
        "--token",
        default=os.environ.get("CLIPSCHED_TOKEN"),
        help="bearer token (default: $CLIPSCHED_TOKEN)",
    )
    parent.add_argument("--json", action="store_true", help="print the raw JSON answer")
    return parent


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The root parser. Learner commands are listed by name; only ``command`` (the one on
    the command line, if it is a learner command) has its module imported and its flags."""
    parser = argparse.ArgumentParser(
        prog="clipsched",
        description="Clip scheduler for multi-clip motion imitation: service, runs, training.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    rest = _rest_options()

    serve = sub.add_parser("serve", help="run the scheduler service")
    serve.add_argument("--host", default=None, help="bind address (default from settings)")
    serve.add_argument("--port", type=int, default=None, help="port (default from settings)")
    serve.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL, e.g. sqlite:///clipsched.db"
    )
    serve.set_defaults(func=cmd_serve)

    runs = sub.add_parser("runs", help="create, list and show runs")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    create = runs_sub.add_parser("create", parents=[rest], help="create a run")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--clips", help="comma-separated clip names: Idle,Walk,Run")
    create.add_argument("--groups", help="group per clip: calm,gait,gait or Walk=gait,Run=gait")
    create.add_argument("--preset", help="fill missing fields from a preset: design-note")
    create.add_argument(
        "--strategy",
        choices=("static", "controller", "difficulty", "ucb", "thompson"),
        help="how clip_probs adapt",
    )
    create.add_argument(
        "--targets", action="append", metavar="CLIP=SHARE,...", help="target_usage per clip"
    )
    create.add_argument(
        "--group-targets",
        action="append",
        metavar="GROUP=SHARE,...",
        help="target_usage_by_group",
    )
    create.add_argument("--from-file", metavar="SPEC.json", help="base run spec (JSON)")
    create.add_argument(
        "--exist-ok", action="store_true", help="show the existing run instead of failing"
    )
    create.set_defaults(func=cmd_runs_create)
    lst = runs_sub.add_parser("list", parents=[rest], help="list runs")
    lst.set_defaults(func=cmd_runs_list)
    show = runs_sub.add_parser("show", parents=[rest], help="usage against target per clip")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(func=cmd_runs_show)

    targets = sub.add_parser("targets", help="override target usage of a live run")
    targets_sub = targets.add_subparsers(dest="targets_command", metavar="ACTION", required=True)
    tset = targets_sub.add_parser("set", parents=[rest], help="set target_usage shares")
    tset.add_argument("name", metavar="NAME")
    tset.add_argument("assignments", nargs="+", metavar="CLIP=SHARE", help="e.g. Walk=0.3 Run=0.1")
    tset.add_argument("--group", action="store_true", help="the names are groups, not clips")
    tset.add_argument(
        "--if-match", type=int, metavar="VERSION", help="fail (412) unless state_version matches"
    )
    tset.set_defaults(func=cmd_targets_set)

    for name, (target, help_text) in LEARNER_COMMANDS.items():
        if name == command:
            _add_learner_command(sub, name, target, help_text)
        else:  # listed in --help; its module is not imported
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _add_learner_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, target: str, help_text: str
) -> None:
    """Import the command's module and let it add its subparser; without the learner
    extra, a stand-in that says what to install (and takes any arguments)."""
    module_name, _, function = target.partition(":")
    try:
        add_command = getattr(importlib.import_module(module_name), function)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a module"
        stand_in = sub.add_parser(name, help=help_text, add_help=False)
        stand_in.add_argument("rest", nargs=argparse.REMAINDER)
        stand_in.set_defaults(func=lambda _args: _missing_extra(name, missing))
        return
    add_command(sub)


def _missing_extra(command: str, missing: str) -> int:
    sys.stderr.write(
        f"clipsched {command}: needs the learner extra ({missing} is not installed): "
        f"{LEARNER_EXTRA}\n"
    )
    return 2


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of a command line (the first argument that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clipsched`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_of(args_list))
    args = parser.parse_args(args_list)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func: Handler = args.func
    try:
        return func(args)
    except _UsageError as exc:
        parser.error(str(exc))  # exits with code 2
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if (
            args_list
            and command_of(args_list) in LEARNER_COMMANDS
            and (missing in LEARNER_EXTRA_MODULES)
        ):
            return _missing_extra(str(command_of(args_list)), missing)
        raise
    except Exception as exc:
        from clipsched.client import SchedulerError

        if not isinstance(exc, SchedulerError):
            raise
        sys.stderr.write(f"clipsched: {exc}\n")
        return 1
