"""``clipsched train``: the learner's command, added to the root CLI by ``add_train_command``.

Every ``TrainConfig`` field is a flag (``--num-envs 16``, ``--no-per-clip-adv-norm``,
``--aggregation lse``, ``--kl-experts-path none``), generated from the dataclass with its
field docstring as help. ``--config FILE`` (TOML or JSON) sets the base; flags override
it. ``--train-experts DIR`` trains one expert per clip (§7) instead of the shared policy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from typing import Any, Literal

from learner.config import TrainConfig, field_docs, field_types, load_config

logger = logging.getLogger(__name__)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field_flag(group: argparse._ArgumentGroup, name: str, tp: Any, help_text: str) -> None:
    """One flag for one TrainConfig field; absent flags leave the field alone."""
    args = typing.get_args(tp)
    optional = type(None) in args
    inner = next((a for a in args if a is not type(None)), tp) if optional else tp
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if inner is bool:
        group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
        return
    if typing.get_origin(inner) is tuple:
        kwargs["nargs"] = "*"
        kwargs["metavar"] = "VALUE"
    elif typing.get_origin(inner) is Literal:
        kwargs["choices"] = [*typing.get_args(inner), *(["none"] if optional else [])]
    else:
        kwargs["metavar"] = inner.__name__.upper() + ("|none" if optional else "")
    group.add_argument(_flag(name), **kwargs)


def build_train_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the train flags to ``parser``."""
    parser.add_argument(
        "--config", help="TOML or JSON file with TrainConfig fields (flags override it)"
    )
    parser.add_argument(
        "--train-experts",
        metavar="DIR",
        help="train one single-clip expert per clip into DIR (for --kl-experts-path) and exit",
    )
    parser.add_argument(
        "--dump-config", action="store_true", help="print the effective config as JSON and exit"
    )
    group = parser.add_argument_group("training config (TrainConfig fields)")
    docs = field_docs()
    for name, tp in field_types().items():
        _add_field_flag(group, name, tp, docs.get(name, ""))
    return parser


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig overrides given on the command line ("none" -> None, commas split lists)."""
    types_ = field_types()
    values: dict[str, Any] = {}
    for name in types_:
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if isinstance(value, list):
            value = [part for item in value for part in str(item).split(",") if part]
        elif value == "none" and type(None) in typing.get_args(types_[name]):
            value = None
        values[name] = value
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The env's defaults (``ENV_DEFAULTS``), then the config file, then the given flags."""
    flags = _flag_values(args)
    if getattr(args, "config", None):
        return load_config(args.config, **flags)
    return TrainConfig.for_env(str(flags.pop("env", "planar")), **flags)


def run_train(args: argparse.Namespace) -> int:
    """Entry point of ``clipsched train``."""
    from learner.clip_library import ClipError, check_clip_names
    from learner.train import train, train_experts

    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        logger.error("bad training config: %s", exc)
        return 2
    if args.dump_config:
        sys.stdout.write(json.dumps(config.to_dict(), indent=2) + "\n")
        return 0
    try:
        check_clip_names(config.env, config.clips)
        if args.train_experts:
            saved = train_experts(config, args.train_experts)
            logger.info("trained %d experts into %s", len(saved), args.train_experts)
            return 0
        result = train(config)
    except ClipError as exc:  # an unknown clip name or a bad clip file: one line, no traceback
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        logger.warning("interrupted; the checkpoint keeps the last finished update")
        return 130
    if result.interrupted:
        logger.warning(
            "stopped at step %d; checkpoint %s (run the same command to resume)",
            result.global_step, result.checkpoint_path,
        )  # fmt: skip
        return 130
    logger.info(
        "trained %d steps (%d updates, %d episodes); checkpoint %s",
        result.global_step, result.updates, result.episodes, result.checkpoint_path,
    )  # fmt: skip
    logger.info("TensorBoard: tensorboard --logdir %s", config.log_dir)
    return 0


def add_train_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train`` to the root CLI (``scheduler_service.cli.LEARNER_COMMANDS``)."""
    parser = subparsers.add_parser(
        "train",
        help="train a multi-clip imitation policy with PPO",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build_train_parser(parser)
    parser.set_defaults(func=run_train)
