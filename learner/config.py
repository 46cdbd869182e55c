"""Typed training configuration: one dataclass, loadable from TOML/JSON, overridable by flags.

Every field carries a docstring (it becomes the ``--help`` text of its flag, see
``field_docs``); derived values are properties. Defaults follow design note §8 where the
note gives one.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import json
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from scheduler_service.algorithms.aggregation import AggregationKind

EnvKind = Literal["planar", "humanoid"]
NormalizationMode = Literal["per_clip", "global", "none"]
RewardSource = Literal["aggregate", "active_clip"]


FIVE_CLIPS: tuple[str, ...] = ("Idle", "Walk", "Back", "Run", "Sprint")
"""The design note's example clip set, in order: the default clips of both envs and the
clips of the demo's planar run and of the collapse experiment."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one ``clipsched train`` run needs."""

    # --- environment -------------------------------------------------------------
    env: EnvKind = "planar"
    """Which character: the cheap planar walker or the MuJoCo humanoid."""
    clips: tuple[str, ...] = ()
    """Clip names or files to train on (``clipsched clips list`` shows the names); empty =
    the env's default set (the note's five)."""
    clip_source: str | None = None
    """Humanoid: where the five-clip example's walk and run come from: none = pybullet_data
    if installed, else the shipped clips; shipped; pybullet_data; builtin (synthetic
    gaits); or a directory of clip files."""
    num_envs: int = 8
    """Characters stepped together in one batched env."""
    skill_one_hot: bool = True
    """Append the active clip's one-hot to the observation (§5)."""
    max_episode_steps: int = 300
    """Control steps (30 Hz) before an episode is truncated."""
    success_threshold: float = 0.5
    """An episode succeeds when it ran to its end without a termination and its mean
    active-clip tracking reward per step is >= this."""
    term_weights: tuple[float, ...] = ()
    """Weights of the pose, velocity, end_effector and root terms (sum to 1); empty = the
    env's (humanoid 0.5, 0.1, 0.15, 0.25 as MimicKit; planar 0.65, 0.1, 0.15, 0.1)."""
    term_scales: tuple[float, ...] = ()
    """Humanoid: k of pose, velocity, end_effector, root, then the root error's height,
    tilt, velocity and angular-velocity weights (a prefix is enough); empty = DeepMimic's
    released values 2, 0.1, 10, 5, 1, 0.1, 0.01, 0.001."""
    action_mode: Literal["absolute", "residual"] = "residual"
    """Humanoid: residual = PD target is the reference pose one step ahead + a correction;
    absolute = the action is the PD target, 0 = the rest pose."""
    action_scale: float = 1.0
    """Humanoid: multiplies each axis' action half-range (max |joint limit|)."""
    future_frames: tuple[int, ...] = (1, 2, 3)
    """Humanoid: control steps ahead at which the reference is appended to the observation."""
    contact_termination: bool = True
    """Humanoid: end an episode when any body but the feet touches the floor."""
    contact_free_clips: tuple[str, ...] = ("getup_faceup", "getup_facedown", "roll", "crawl")
    """Humanoid: clips exempt from the contact termination."""
    pose_termination_distance: float | None = 0.5
    """Humanoid: end an episode when a wrist or ankle strays further than this (m) from
    its reference (root-relative); none = off."""
    root_height_termination: float | None = 0.3
    """Humanoid: ... or the root height further than this (m) from the reference's."""
    end_with_clip: bool = True
    """Humanoid: a clip that does not loop ends its episode at its last frame."""

    # --- PPO ---------------------------------------------------------------------
    rollout_steps: int = 256
    """Control steps per env in one rollout (batch = num_envs * rollout_steps)."""
    minibatch_size: int = 512
    """Samples per gradient step."""
    update_epochs: int = 5
    """Passes over each rollout."""
    learning_rate: float = 3e-4
    """Adam step size (the actor's initial one when desired_kl is set)."""
    desired_kl: float | None = None
    """Adapt the actor's step size after every minibatch to keep KL(pi_old || pi) near
    this (divide by 1.5 above 2x, multiply below 0.5x; rsl_rl's adaptive schedule)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO ratio clip epsilon."""
    clip_value_loss: bool = False
    """Clip the value loss around the rollout's values."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    entropy_coef: float = 0.0
    """Plain entropy bonus coefficient (on top of the floor)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critic."""
    init_log_std: float = -1.0
    """Initial log standard deviation of the policy (actions are in [-1, 1])."""
    learn_std: bool = True
    """Learn the policy's log std; false keeps it at init_log_std (DeepMimic and MimicKit
    fix it at log 0.05 = -3.0 for tracking)."""
    activation: Literal["relu", "tanh", "elu"] = "relu"
    """Hidden activation of actor and critic."""
    obs_norm: bool = True
    """Normalise observations with running statistics (batched update per rollout)."""
    reward_scaling: bool = True
    """Divide rewards by the running std of the discounted return (batched, per rollout)."""
    backward_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision of the update's backward matrix products; the forward pass (losses,
    ratios, values) is always float32. auto = bfloat16 where the CPU multiplies it natively
    (AVX512-BF16 or AMX), else float32 (README, Performance: the measured update times)."""
    update_threads: int = 2
    """2 = the critic's epochs of each update run on a second thread, beside the actor's
    epochs and the next rollout (which needs only the actor), so a second core takes the
    critic's half of the update off the loop's critical path; 1 = one after the other on
    one thread. Both give the same numbers (torch single-threaded on each thread)."""

    # --- the design note's techniques ----------------------------------------------
    per_clip_adv_norm: bool = True
    """Normalise advantages per clip instead of over the whole batch (§4)."""
    per_clip_value_heads: bool = True
    """Shared critic backbone with one value head per clip (§5)."""
    gradnorm: bool = False
    """GradNorm-like per-clip loss weights alpha_i = g_bar / (g_i + eps) (§4), for the actor
    loss and the value loss each from its own per-clip gradient norms g_i."""
    gradnorm_eps: float = 1e-8
    """eps of the GradNorm weights."""
    moe_experts: int = 0
    """Mixture-of-experts actor with this many experts, gated by w and the clip (§5); 0 = off."""
    kl_experts_path: str | None = None
    """Directory of per-clip experts (from ``--train-experts DIR``) for KL anchoring (§7)."""
    kl_beta: float = 0.03
    """Weight beta of the KL-to-expert term (§7: 0.01-0.1)."""
    entropy_floor: float | None = -0.5
    """Entropy floor h_min in nats per action dimension (§8); None = no floor."""
    entropy_floor_coef: float = 0.1
    """Slope of the hinge penalty coef * max(0, h_min - H)."""
    entropy_floor_steps: int = 0
    """Apply the floor only for the first this many env steps (§8: 3-5 M); 0 = always."""

    # --- reward (§3) ----------------------------------------------------------------
    normalization: NormalizationMode = "per_clip"
    """Term z-scoring: per_clip (§3, mandatory in the note), global (naive baseline) or none."""
    norm_min_count: int = 1000
    """Steps a clip's term normaliser must have seen before it is used (raw terms until then)."""
    aggregation: AggregationKind | None = None
    """Override the scheduler's reward aggregation (max, lse, threshold); None = the scheduler's."""
    temperature: float | None = None
    """Override the LogSumExp temperature tau."""
    threshold_delta: float | None = None
    """Override the threshold-mix delta."""
    reward_source: RewardSource = "aggregate"
    """aggregate over clips, or the active clip's own reward (used for expert training)."""
    alive_bonus: float = 0.0
    """Added to every step's reward. 0: the reward is already positive (raw terms in [0, 1],
    or the z-scored aggregate squashed by a sigmoid), so a fall forfeits what the rest of
    the episode would have paid and surviving without tracking earns little."""

    # --- clips without a scheduler -------------------------------------------------------
    clip_probs: tuple[float, ...] = ()
    """Static sampling probabilities (§1) when no scheduler is used; empty = uniform."""

    # --- run, logging, checkpoints ---------------------------------------------------------
    seed: int = 0
    """Seed of torch, numpy and the env."""
    total_steps: int = 1_000_000
    """Env steps (summed over envs) to train for."""
    log_dir: str = "runs"
    """TensorBoard root; this learner logs to <log_dir>/<run_name>/<learner_id>."""
    checkpoint_dir: str | None = None
    """Where checkpoints go; None = <log_dir>/<run_name>/<learner_id>/checkpoints."""
    checkpoint_every: int = 20
    """Save a checkpoint every this many updates (and at the end); 0 = only at the end."""
    init_from: str | None = None
    """Start from the weights of this checkpoint (another run's latest.pt) when there is no
    checkpoint to resume; its clips may differ (learner.warm_start)."""
    resume: bool = True
    """Resume from the checkpoint in checkpoint_dir when there is one."""
    progress: bool = True
    """Show a progress bar with steps/s and per-clip usage on the console."""
    usage_window: int = 200
    """Finished episodes over which the local usage share per clip is measured."""
    eval_every: int = 0
    """Evaluate the policy deterministically every this many updates (success, tracking
    reward, episode length per clip to TensorBoard ``eval/...`` and <run_dir>/eval.jsonl);
    0 = never."""
    eval_episodes: int = 8
    """Episodes per clip in each evaluation."""
    eval_envs: int = 8
    """Characters stepped together in an evaluation."""
    log_clips_max: int = 64
    """Write per-clip TensorBoard scalars only for clip sets up to this size."""

    # --- scheduler ------------------------------------------------------------------------
    scheduler_url: str | None = None
    """Base URL of a clip scheduler; None = sample clips in process (StaticClipSource)."""
    embedded_scheduler: bool = False
    """Start a scheduler inside this process (SQLite file ``scheduler_db``) and use it."""
    scheduler_db: str = "clipsched.db"
    """SQLite file of the embedded scheduler."""
    run_name: str = "default"
    """The scheduler run this learner attaches to (created with ``run_preset`` if missing)."""
    run_preset: str | None = "design-note"
    """Preset used when this learner creates the run."""
    learner_id: str = "learner0"
    """This learner's id in the run (episode ids start with it)."""
    run_state_every_s: float = 10.0
    """How often a background thread reads the run state (target and run-wide usage) to log."""

    def __post_init__(self) -> None:
        positive = ("num_envs", "rollout_steps", "minibatch_size", "update_epochs", "total_steps")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.backward_precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(
                "backward_precision must be auto, float32 or bfloat16, "
                f"got {self.backward_precision!r}"
            )
        if self.update_threads not in (1, 2):
            raise ValueError(f"update_threads must be 1 or 2, got {self.update_threads}")
        if self.moe_experts < 0:
            raise ValueError("moe_experts must be >= 0")
        if not self.hidden:
            raise ValueError("hidden needs at least one layer")
        if self.max_episode_steps <= 0:
            raise ValueError(f"max_episode_steps must be positive, got {self.max_episode_steps}")
        if self.term_weights and len(self.term_weights) != 4:
            raise ValueError(f"term_weights needs 4 values, got {len(self.term_weights)}")

    @property
    def batch_size(self) -> int:
        """Samples per rollout."""
        return self.num_envs * self.rollout_steps

    @property
    def num_updates(self) -> int:
        """Rollout/update iterations needed to reach ``total_steps``."""
        return max(1, -(-self.total_steps // self.batch_size))

    @property
    def run_dir(self) -> Path:
        """TensorBoard directory of this learner."""
        return Path(self.log_dir) / self.run_name / self.learner_id

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file (one, replaced atomically)."""
        base = Path(self.checkpoint_dir) if self.checkpoint_dir else self.run_dir / "checkpoints"
        return base / "latest.pt"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples become lists), JSON/TOML friendly."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with some fields replaced (values coerced to the field types)."""
        return replace(self, **coerce_fields(overrides))

    @classmethod
    def for_env(cls, env: str = "planar", **values: Any) -> TrainConfig:
        """The config of ``env``: field defaults, then ``ENV_DEFAULTS[env]``, then ``values``."""
        if env not in ENV_DEFAULTS:
            raise ValueError(f"env: {env!r} is not one of {tuple(ENV_DEFAULTS)}")
        return cls(**coerce_fields({**ENV_DEFAULTS[env], **values, "env": env}))


ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "planar": {"num_envs": 16, "rollout_steps": 128},
    "humanoid": {
        "num_envs": 16,
        "rollout_steps": 128,
        "gamma": 0.95,
        "learning_rate": 5e-5,
        "init_log_std": -3.0,
        "learn_std": False,
        "entropy_floor": None,
    },
}
"""What each env changes from the field defaults, applied under a config file and flags
(``TrainConfig.for_env``, ``clipsched train``). The humanoid follows the released
tracking setups where they were measured to help here: gamma 0.95 (DeepMimic), a fixed
exploration std of 0.05 (DeepMimic, MimicKit), no entropy floor, and a small constant Adam
step (5e-5: with sigma = 0.05, 3e-4 moved the policy by KL ~0.5 per update and an
adaptive step held at ~1e-5 learned slower; ``docs/learning.md``)."""


def field_types() -> dict[str, Any]:
    """Resolved type hints of TrainConfig's fields."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


@functools.cache
def field_docs() -> dict[str, str]:
    """Each field's docstring, read from the class source (the string after the field)."""
    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) of ``X | None``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return tp, False


def coerce_value(name: str, tp: Any, value: Any) -> Any:
    """Coerce a loaded value (lists, numbers) to the field type; ValueError naming the field."""
    inner, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}: None is not allowed")
    origin = typing.get_origin(inner)
    if origin is tuple:
        item_type = typing.get_args(inner)[0]
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(item_type(v) for v in items if v != "")
    if origin is Literal:
        choices = typing.get_args(inner)
        if value not in choices:
            raise ValueError(f"{name}: {value!r} is not one of {choices}")
        return value
    if inner is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true/false, got {value!r}")
        return value
    if inner is int and (isinstance(value, bool) or float(value) != int(value)):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return inner(value)


def coerce_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Coerce a mapping of field values; unknown names are a ValueError listing them."""
    types_ = field_types()
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
    return {k: coerce_value(k, types_[k], v) for k, v in values.items()}


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The field values of a .toml or .json config file (a ``[train]`` table is accepted)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    if isinstance(data.get("train"), dict) and len(data) == 1:
        data = data["train"]
    return data


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a config file: its env's defaults, the file, then ``overrides``."""
    values = {**read_config_values(path), **overrides}
    return TrainConfig.for_env(str(values.pop("env", "planar")), **values)
