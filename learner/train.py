"""The PPO training loop: rollout -> advantages -> update -> log, plus checkpoints and experts.

``train`` is the loop and reads in one screen; each stage is a small function or method
below it. The loop runs over any ``VecMultiClipEnv`` and any ``ClipSource``: in process
(``StaticClipSource``), a scheduler URL or an embedded scheduler (``SchedulerClipSource``
from ``clipsched.client.http``, imported lazily). Every finished episode becomes an ``Outcome``
with a unique episode id and is reported to the clip source. ``train_experts`` trains one
single-clip policy per clip with the same loop; ``load_experts`` loads them for the KL
anchoring of design note §7.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clipsched.clip_source import ActorConfig, ClipSource, Outcome, StaticClipSource
from learner import ppo
from learner.config import TrainConfig
from learner.envs.base import EpisodeEnd, VecMultiClipEnv, VecStep
from learner.envs.builders import ENV_BUILDERS, EnvFactory
from learner.models import ActorCritic, ModelConfig, native_bfloat16
from learner.normalization import ReturnScaler, RunningObsNormalizer
from learner.reward_shaping import RewardShaper, ShapingSettings
from learner.stopping import GracefulStop

logger = logging.getLogger(__name__)


CHECKPOINT_FORMAT = 2
"""2: one Adam state for the actor and one for the critic; 1 had one over the whole model."""


ADAM_IMPLEMENTATION: dict[str, Any] = {"fused": True, "foreach": None}
"""Adam's CPU kernel: ``fused`` is one C++ loop over all parameters (the same update rule
as the ``foreach`` kernel, and faster on CPU)."""


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    env_factory: EnvFactory | None = None,
    clip_source: ClipSource | None = None,
) -> TrainResult:
    """Train a policy with PPO as ``config`` says; resumes from its checkpoint if present.

    The first SIGINT/SIGTERM stops after the current update (``learner.stopping``).
    """
    torch.set_num_threads(1)
    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(GracefulStop())
        learner = Learner.open(config, env_factory, clip_source, stack)
        try:
            while learner.update_index < config.num_updates and not stop.requested:
                rollout = learner.collect_rollout()
                batch = learner.advantages(rollout)
                stats = learner.update(batch)
                learner.log(rollout, stats)
                if config.eval_every and learner.update_index % config.eval_every == 0:
                    learner.evaluate()
                if config.checkpoint_every and learner.update_index % config.checkpoint_every == 0:
                    learner.save_checkpoint()
        finally:  # also on a second Ctrl-C: keep the last finished update
            learner.save_checkpoint()
        result = learner.result()
        result.interrupted = stop.requested
        return result


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


class ClipTracker:
    """Knows each env slot's active clip by recording what ``next_clip`` hands out.

    The env calls ``next_clip`` once per reset slot, in slot order; the ids are checked
    against ``VecStep.clip_ids`` at the next step. The MoE gate needs the clip of the
    observation *before* the step, which ``VecStep`` only reports after it.
    """

    def __init__(self, source: ClipSource) -> None:
        self._source = source
        self._pending: list[int] = []
        self.current = np.zeros(0, dtype=np.int64)

    def next_clip(self) -> int:
        """Forwarded to the clip source; the id is remembered."""
        clip = self._source.next_clip()
        self._pending.append(clip)
        return clip

    def on_reset(self, num_envs: int) -> None:
        """All slots were reset: the last ``num_envs`` ids are theirs, in slot order."""
        if len(self._pending) < num_envs:
            raise RuntimeError("env.reset() did not draw a clip per slot from next_clip")
        self.current = np.array(self._pending[-num_envs:], dtype=np.int64)
        self._pending.clear()

    def on_step(self, step: VecStep) -> None:
        """Slots whose episode ended got the clips drawn during this step, in slot order."""
        if (step.clip_ids != self.current).any():
            raise RuntimeError("env's active clips differ from the clips next_clip handed out")
        if not self._pending and not step.episodes:
            return
        ended = np.flatnonzero(step.terminated | step.truncated)
        if len(self._pending) != len(ended):
            raise RuntimeError(
                f"{len(ended)} episodes ended but next_clip was called {len(self._pending)} times"
            )
        self.current = self.current.copy()
        self.current[ended] = self._pending
        self._pending.clear()


class ClipStats:
    """Per-clip episode statistics for usage shares and TensorBoard."""

    def __init__(self, num_clips: int, window: int) -> None:
        self.num_clips = num_clips
        self.recent: deque[int] = deque(maxlen=window)
        self.total_episodes = np.zeros(num_clips)
        self._clear()

    def _clear(self) -> None:
        k = self.num_clips
        self.episodes = np.zeros(k)
        self.success = np.zeros(k)
        self.length = np.zeros(k)
        self.tracking_return = np.zeros(k)
        self.reward_sum = np.zeros(k)
        self.reward_steps = np.zeros(k)

    def add_episode(self, episode: EpisodeEnd) -> None:
        """Count one finished episode."""
        i = episode.clip_id
        self.recent.append(i)
        self.total_episodes[i] += 1
        self.episodes[i] += 1
        self.success[i] += episode.success
        self.length[i] += episode.steps
        self.tracking_return[i] += episode.tracking_return

    def add_rewards(self, clip_ids: np.ndarray, active_rewards: np.ndarray) -> None:
        """Accumulate the normalised reward r~ of each step's active clip."""
        self.reward_sum += np.bincount(clip_ids, active_rewards, minlength=self.num_clips)
        self.reward_steps += np.bincount(clip_ids, minlength=self.num_clips)

    def usage(self) -> np.ndarray:
        """Share of each clip among the last ``window`` finished episodes (u_i)."""
        counts = np.bincount(np.fromiter(self.recent, np.int64), minlength=self.num_clips)
        total = counts.sum()
        return counts / total if total else np.zeros(self.num_clips)

    def pop_window(self) -> dict[str, np.ndarray]:
        """Per-clip means since the last call (NaN where a clip had no episode), then reset."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {
                "episodes": self.episodes.copy(),
                "success": self.success / self.episodes,
                "episode_length": self.length / self.episodes,
                "tracking_return": self.tracking_return / self.episodes,
                "normalized_reward": self.reward_sum / self.reward_steps,
            }
        self._clear()
        return out


@dataclass
class Rollout:
    """One rollout, time-major (T, N, ...)."""

    obs: np.ndarray
    """Normalised observations the actions were taken on."""
    raw_obs: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    rewards: np.ndarray
    clip_ids: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    """Normalised observation before the reset, where an episode ended."""
    last_obs: np.ndarray
    """Normalised observation after the last step (bootstrap)."""
    reward_weights: np.ndarray
    shaped_rewards: np.ndarray | None = None
    """The rewards before return scaling (for logging)."""
    seconds: float = 0.0

    @classmethod
    def empty(
        cls, t_len: int, n: int, obs_dim: int, action_dim: int, reward_weights: np.ndarray
    ) -> Rollout:
        """Zeroed buffers for ``t_len`` steps of ``n`` envs."""
        obs_shape = (t_len, n, obs_dim)
        return cls(
            obs=np.zeros(obs_shape, np.float32),
            raw_obs=np.zeros(obs_shape, np.float32),
            actions=np.zeros((t_len, n, action_dim), np.float32),
            log_probs=np.zeros((t_len, n), np.float32),
            rewards=np.zeros((t_len, n), np.float32),
            clip_ids=np.zeros((t_len, n), np.int64),
            terminated=np.zeros((t_len, n), bool),
            truncated=np.zeros((t_len, n), bool),
            final_obs=np.zeros(obs_shape, np.float32),
            last_obs=np.zeros((n, obs_dim), np.float32),
            reward_weights=reward_weights,
        )


@dataclass(frozen=True)
class ExpertTargets:
    """Per-sample action distribution of the active clip's expert (§7)."""

    mean: Tensor
    log_std: Tensor
    has_expert: Tensor
    """(B,) bool: the sample's clip has an expert."""


@dataclass
class Batch:
    """A flat PPO batch."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    advantages: Tensor
    returns: Tensor
    values: Tensor
    clip_ids: Tensor
    reward_weights: Tensor
    experts: ExpertTargets | None = None

    @property
    def size(self) -> int:
        """Number of samples."""
        return int(self.obs.shape[0])

    def shuffled(self, order: Tensor) -> Batch:
        """The samples in ``order``: one gather per tensor, so minibatches are slices (views)."""

        def take(x: Tensor) -> Tensor:
            return x.index_select(0, order)

        experts = self.experts
        if experts is not None:
            experts = ExpertTargets(
                take(experts.mean), take(experts.log_std), take(experts.has_expert)
            )
        return Batch(
            obs=take(self.obs),
            actions=take(self.actions),
            log_probs=take(self.log_probs),
            advantages=take(self.advantages),
            returns=take(self.returns),
            values=take(self.values),
            clip_ids=take(self.clip_ids),
            reward_weights=self.reward_weights,
            experts=experts,
        )

    def slice(self, start: int, stop: int) -> Batch:
        """Samples start..stop as views (no copies)."""
        experts = self.experts
        if experts is not None:
            experts = ExpertTargets(
                experts.mean[start:stop],
                experts.log_std[start:stop],
                experts.has_expert[start:stop],
            )
        return Batch(
            obs=self.obs[start:stop],
            actions=self.actions[start:stop],
            log_probs=self.log_probs[start:stop],
            advantages=self.advantages[start:stop],
            returns=self.returns[start:stop],
            values=self.values[start:stop],
            clip_ids=self.clip_ids[start:stop],
            reward_weights=self.reward_weights,
            experts=experts,
        )


@dataclass
class UpdateStats:
    """What one PPO update measured (means over its minibatches)."""

    policy_loss: float = 0.0
    value_loss: float = 0.0
    entropy: float = 0.0
    entropy_penalty: float = 0.0
    approx_kl: float = 0.0
    clipfrac: float = 0.0
    grad_norm: float = 0.0
    """The actor's gradient norm before clipping."""
    learning_rate: float = float("nan")
    """The actor's step size after the update (it moves when desired_kl is set)."""
    critic_grad_norm: float = float("nan")
    kl_experts: float = float("nan")
    explained_variance: float = float("nan")
    clip_grad_norms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clip_loss_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    clip_kl_experts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seconds: float = 0.0


@dataclass(frozen=True)
class CriticStats:
    """What the critic's epochs of one update measured (means over its minibatches)."""

    value_loss: float
    grad_norm: float


CriticInFlight = tuple["concurrent.futures.Future[CriticStats]", int, UpdateStats]
"""The critic's epochs running on the update thread, with the step and stats of their update."""


@dataclass
class TrainResult:
    """What ``train`` hands back."""

    model: ActorCritic
    obs_norm: RunningObsNormalizer | None
    global_step: int
    updates: int
    episodes: int
    checkpoint_path: Path
    last_stats: UpdateStats
    clip_names: list[str]
    interrupted: bool = False
    """A SIGINT/SIGTERM stopped training before ``total_steps``."""


class ExpertPolicy:
    """A frozen per-clip expert pi_i (§7) with its own observation normaliser."""

    def __init__(self, model: ActorCritic, obs_norm: RunningObsNormalizer | None, clip_id: int):
        self.model = model.eval()
        self.obs_norm = obs_norm
        self.clip_id = clip_id

    @torch.no_grad()
    def mean(self, raw_obs: np.ndarray, num_clips: int) -> Tensor:
        """Action mean of the expert on raw (B, obs_dim) observations."""
        obs = self.obs_norm.normalize(raw_obs) if self.obs_norm else raw_obs.astype(np.float32)
        ids = torch.full((obs.shape[0],), self.clip_id, dtype=torch.long)
        weights = torch.nn.functional.one_hot(torch.tensor(self.clip_id), num_clips).float()
        return self.model.action_mean(torch.from_numpy(obs), ids, weights)


def _safe_name(name: str) -> str:
    """A file-name-safe version of a clip name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, then os.replace (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_experts(
    path: str | Path, clip_names: list[str], model_config: ModelConfig
) -> dict[int, ExpertPolicy]:
    """Load the experts saved by ``train_experts`` for the clips that have one."""
    root = Path(path)
    manifest = json.loads((root / "experts.json").read_text(encoding="utf-8"))
    experts: dict[int, ExpertPolicy] = {}
    for clip_id, name in enumerate(clip_names):
        file_name = manifest["clips"].get(name)
        if file_name is None:
            continue
        saved = torch.load(root / file_name, weights_only=True)
        if list(saved.get("clip_names", clip_names)) != list(clip_names):
            raise ValueError(
                f"expert {name!r} was trained with clips {saved['clip_names']}, not {clip_names}"
            )
        config = ModelConfig.from_dict(saved["model_config"])
        if (config.obs_dim, config.action_dim) != (model_config.obs_dim, model_config.action_dim):
            raise ValueError(
                f"expert {name!r} has obs/action dims {(config.obs_dim, config.action_dim)}, "
                f"the policy {(model_config.obs_dim, model_config.action_dim)}"
            )
        model = ActorCritic(config)
        model.load_state_dict(saved["model"])
        obs_norm = None
        if saved.get("obs_norm") is not None:
            obs_norm = RunningObsNormalizer(config.obs_dim)
            obs_norm.load_state_dict(saved["obs_norm"])
        experts[clip_id] = ExpertPolicy(model, obs_norm, saved.get("clip_id", clip_id))
    logger.info("loaded %d experts from %s", len(experts), root)
    return experts


@contextlib.contextmanager
def embedded_scheduler(db_path: str) -> Iterator[str]:
    """Run a scheduler (SQLite file ``db_path``) on a loopback port in a thread; yield its URL."""
    from scheduler_service.config import Settings
    from scheduler_service.server import serve_in_thread

    settings = Settings(database_url=f"sqlite:///{Path(db_path).resolve()}")
    with serve_in_thread(settings) as url:
        logger.info("embedded scheduler on %s (%s)", url, db_path)
        yield url


def open_clip_source(
    config: TrainConfig,
    clip_names: list[str],
    term_names: tuple[str, ...],
    stack: contextlib.ExitStack,
) -> ClipSource:
    """The clip source the config asks for: a scheduler (URL or embedded) or static sampling."""
    url = config.scheduler_url
    if url is None and config.embedded_scheduler:
        url = stack.enter_context(embedded_scheduler(config.scheduler_db))
    if url is None:
        probs = np.asarray(config.clip_probs, dtype=np.float64) if config.clip_probs else None
        source: ClipSource = StaticClipSource(
            clip_names,
            term_names,
            probs,
            aggregation=config.aggregation or "lse",
            temperature=0.3 if config.temperature is None else config.temperature,
            threshold_delta=0.5 if config.threshold_delta is None else config.threshold_delta,
            seed=config.seed,
        )
    else:
        from clipsched.client import SchedulerClipSource

        source = SchedulerClipSource.for_run(
            url,
            config.run_name,
            learner_id=config.learner_id,
            clip_names=clip_names,
            term_names=term_names,
            preset=config.run_preset,
            num_envs=config.num_envs,
            buffer_dir=config.run_dir / "outcome-buffer",  # survives a restart of this learner
        )
    stack.callback(source.close)
    return source


class RunStateWatcher:
    """Polls the scheduler's run state in a background thread (target and run-wide usage).

    The training loop only reads the last answer, so it never waits on the network.
    """

    def __init__(self, client: Any, clip_names: list[str], every_s: float) -> None:
        self._client = client
        self._index = {name: i for i, name in enumerate(clip_names)}
        self._every_s = every_s
        self._stop = threading.Event()
        self.target_usage: np.ndarray | None = None
        self.run_usage: np.ndarray | None = None
        self._thread = threading.Thread(target=self._loop, name="run-state", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._read(self._client.run_state())
            except Exception as exc:  # the scheduler may be down; try again later
                logger.debug("run state unavailable: %s", exc)
            self._stop.wait(self._every_s)

    def _read(self, state: dict[str, Any]) -> None:
        target = np.full(len(self._index), np.nan)
        usage = np.full(len(self._index), np.nan)
        for clip in state.get("clips", ()):
            i = self._index.get(str(clip.get("name")))
            if i is not None:
                target[i] = float(clip.get("target_usage", np.nan))
                usage[i] = float(clip.get("usage", np.nan))
        self.target_usage, self.run_usage = target, usage

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(timeout=5.0)


class _LazySource:
    """Lets the env be built before the clip source (which needs the env's clip names)."""

    def __init__(self) -> None:
        self.tracker: ClipTracker | None = None

    def next_clip(self) -> int:
        """Forward to the tracker once the source exists; clip 0 before that."""
        return self.tracker.next_clip() if self.tracker else 0


# --------------------------------------------------------------------------------------
# The learner: state and the stages of the loop
# --------------------------------------------------------------------------------------


def backward_dtype(precision: str) -> torch.dtype:
    """The dtype of the update's backward products for ``TrainConfig.backward_precision``."""
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


class Learner:
    """Holds the env, clip source, model and optimiser; each loop stage is a method."""

    def __init__(
        self,
        config: TrainConfig,
        env: VecMultiClipEnv,
        source: ClipSource,
        tracker: ClipTracker,
        writer: Any,
    ) -> None:
        self.config = config
        self.env = env
        self.source = source
        self.tracker = tracker
        self.writer = writer
        self.clip_names = list(env.clip_names)
        self.num_clips = len(self.clip_names)
        self.model_config = ModelConfig(
            obs_dim=env.obs_dim,
            action_dim=env.action_dim,
            num_clips=self.num_clips,
            hidden=config.hidden,
            per_clip_value_heads=config.per_clip_value_heads,
            moe_experts=config.moe_experts,
            init_log_std=config.init_log_std,
            activation=config.activation,
        )
        torch.manual_seed(config.seed)
        self.model = ActorCritic(self.model_config)
        self.model.set_grad_dtype(backward_dtype(config.backward_precision))
        self.model.log_std.requires_grad_(config.learn_std)
        # Adam is per parameter: two optimisers step exactly as one would over both sets
        self.actor_params = self.model.actor_parameters()
        self.critic_params = self.model.critic_parameters()
        self.actor_optimizer = torch.optim.Adam(
            self.actor_params, lr=config.learning_rate, eps=1e-5, **ADAM_IMPLEMENTATION
        )
        self.critic_optimizer = torch.optim.Adam(
            self.critic_params, lr=config.learning_rate, eps=1e-5, **ADAM_IMPLEMENTATION
        )
        self.obs_norm = RunningObsNormalizer(env.obs_dim) if config.obs_norm else None
        self.return_scaler = (
            ReturnScaler(env.num_envs, config.gamma) if config.reward_scaling else None
        )
        self.shaper = RewardShaper(
            env.term_weights,
            ShapingSettings(
                # z-scores exist to compare clips (§3); one clip is paid its raw reward
                normalization=config.normalization if self.num_clips > 1 else "none",
                aggregation=config.aggregation,
                temperature=config.temperature,
                threshold_delta=config.threshold_delta,
                source=config.reward_source,
                min_count=config.norm_min_count,
                alive_bonus=config.alive_bonus,
            ),
            tuple(env.term_names),
        )
        self.experts: dict[int, ExpertPolicy] = (
            load_experts(config.kl_experts_path, self.clip_names, self.model_config)
            if config.kl_experts_path
            else {}
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self._critic_pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ppo-critic")
            if config.update_threads > 1
            else None
        )
        """Runs the critic's epochs beside the actor's and the next rollout (see ``update``);
        torch stays single-threaded on each of the two threads."""
        self._critic_pending: CriticInFlight | None = None
        """The critic's epochs in flight, with the step and stats of their update."""
        self.clip_stats = ClipStats(self.num_clips, config.usage_window)
        self.env_factory: EnvFactory = ENV_BUILDERS[config.env]
        """Builds envs like this learner's (evaluation builds its own)."""
        self.train_seconds = 0.0
        """Wall time spent training (rollouts and updates, not evaluation), across resumes."""
        self._eval_seconds = 0.0
        self.session = uuid.uuid4().hex[:12]
        self.global_step = 0
        self.update_index = 0
        self.episodes = 0
        self.last_stats = UpdateStats()
        self.actor_config: ActorConfig | None = None
        self._raw_obs = np.zeros((env.num_envs, env.obs_dim), dtype=np.float32)
        self._started = time.perf_counter()
        self._session_start_step = 0
        self._bar: Any = None
        self._status: Any = None
        self.run_state: RunStateWatcher | None = None

    # ----- opening and closing -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        config: TrainConfig,
        env_factory: EnvFactory | None,
        clip_source: ClipSource | None,
        stack: contextlib.ExitStack,
    ) -> Learner:
        """Build env, clip source, model, writer (closed by ``stack``); resume if possible."""
        lazy = _LazySource()
        factory = env_factory or ENV_BUILDERS[config.env]
        env = factory(config, lazy.next_clip)
        stack.callback(env.close)
        source = clip_source or open_clip_source(
            config, list(env.clip_names), tuple(env.term_names), stack
        )
        names = tuple(source.actor_config().clip_names)
        if names != tuple(env.clip_names):
            raise ValueError(f"clip source clips {names} differ from the env's {env.clip_names}")
        lazy.tracker = tracker = ClipTracker(source)

        from torch.utils.tensorboard import SummaryWriter

        learner = cls(config, env, source, tracker, None)
        learner.env_factory = factory
        stack.callback(learner.close)
        client = getattr(source, "client", None)
        if callable(getattr(client, "run_state", None)):
            learner.run_state = RunStateWatcher(
                client, learner.clip_names, config.run_state_every_s
            )
            stack.callback(learner.run_state.close)
        if config.resume and config.checkpoint_path.exists():
            learner.load_checkpoint(config.checkpoint_path)
        elif config.init_from:
            from learner.warm_start import warm_start

            warm_start(
                learner.model, learner.obs_norm, config.init_from,
                learner.clip_names, config.skill_one_hot,
            )  # fmt: skip
        learner.writer = SummaryWriter(str(config.run_dir), purge_step=learner.global_step or None)
        stack.callback(learner.writer.close)
        learner._open_progress(stack)
        learner._reset_env()
        logger.info(
            "training %s: %d clips, %d envs, %d steps (from step %d)",
            config.run_name, learner.num_clips, config.num_envs,
            config.total_steps, learner.global_step,
        )  # fmt: skip
        return learner

    def _open_progress(self, stack: contextlib.ExitStack) -> None:
        """A tqdm bar (steps, steps/s) and a status line with per-clip usage."""
        if not self.config.progress:
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.config.num_updates * self.config.batch_size,
            initial=self.global_step,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
        )
        self._status = tqdm(total=0, position=1, bar_format="{desc}", dynamic_ncols=True)
        stack.callback(self._status.close)
        stack.callback(self._bar.close)

    def _reset_env(self) -> None:
        """Reset every slot (seeded per session so a resume does not replay the same starts)."""
        raw = self.env.reset(seed=self.config.seed + self.update_index)
        self.tracker.on_reset(self.env.num_envs)
        self._raw_obs = np.asarray(raw, dtype=np.float32)
        if self.return_scaler is not None:
            self.return_scaler.returns[:] = 0.0  # every episode starts afresh
        if self.obs_norm is not None and self.obs_norm.count == 0:
            self.obs_norm.update(self._raw_obs)
        self._session_start_step = self.global_step
        self._started = time.perf_counter()
        self._eval_seconds = 0.0

    def close(self) -> None:
        """Finish the critic's last epochs and stop the update thread (if any)."""
        if self._critic_pool is not None:
            try:
                self._finish_critic()
            finally:
                self._critic_pool.shutdown(wait=True)

    def result(self) -> TrainResult:
        """Summary of the run so far."""
        self._finish_critic()
        return TrainResult(
            model=self.model,
            obs_norm=self.obs_norm,
            global_step=self.global_step,
            updates=self.update_index,
            episodes=self.episodes,
            checkpoint_path=self.config.checkpoint_path,
            last_stats=self.last_stats,
            clip_names=self.clip_names,
        )

    # ----- rollout ----------------------------------------------------------------------

    def elapsed_train_seconds(self) -> float:
        """Training wall time so far: earlier sessions plus this one, less evaluations."""
        return self.train_seconds + time.perf_counter() - self._started - self._eval_seconds

    def evaluate(self) -> list[Any]:
        """Deterministic skill per clip (``learner.evaluate``), logged to TensorBoard and
        appended to <run_dir>/eval.jsonl with the step and the training wall time."""
        from learner.evaluate import Policy, evaluate_clip

        started = time.perf_counter()
        c = self.config
        policy = Policy(self.model, self.obs_norm, c, self.global_step)
        env_config = c.with_overrides(num_envs=c.eval_envs, seed=c.seed + 1000)
        skills = [
            evaluate_clip(
                policy,
                lambda next_clip: self.env_factory(env_config, next_clip),
                clip_id,
                c.eval_episodes,
                seed=c.seed + 1000,
            )
            for clip_id in range(self.num_clips)
        ]
        self._eval_seconds += time.perf_counter() - started
        step, w = self.global_step, self.writer
        for key in ("success", "tracking_reward", "episode_length", "full_length"):
            values = [getattr(skill, key) for skill in skills]
            w.add_scalar(f"eval/{key}", float(np.mean(values)), step)
            if self.num_clips <= c.log_clips_max:
                for name, value in zip(self.clip_names, values, strict=True):
                    w.add_scalar(f"clips/{name}/eval_{key}", value, step)
        record = {
            "step": step,
            "update": self.update_index,
            "train_seconds": round(self.elapsed_train_seconds(), 2),
            "clips": [skill.as_dict() for skill in skills],
        }
        c.run_dir.mkdir(parents=True, exist_ok=True)
        with open(c.run_dir / "eval.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        logger.info(
            "eval at step %d: %s", step,
            ", ".join(f"{s.clip} success {s.success:.2f} reward {s.tracking_reward:.3f} "
                      f"length {s.episode_length:.0f}" for s in skills),
        )  # fmt: skip
        return skills

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        return self.obs_norm.normalize(raw) if self.obs_norm else np.asarray(raw, np.float32)

    @torch.inference_mode()
    def collect_rollout(self) -> Rollout:
        """Step the env ``rollout_steps`` times with the current policy; report episodes."""
        started = time.perf_counter()
        t_len, n, env = self.config.rollout_steps, self.env.num_envs, self.env
        self.actor_config = self.source.actor_config()
        self.shaper.set_actor_config(self.actor_config)
        weights = np.asarray(self.actor_config.reward_weights, dtype=np.float32)
        weights_t = torch.from_numpy(weights)
        ro = Rollout.empty(t_len, n, env.obs_dim, env.action_dim, weights)
        # a_t = mean(s_t) + s * z_t: the std is fixed within a rollout, so the draws and the
        # log probabilities of the whole rollout are computed in one call each
        noise = torch.randn((t_len, n, env.action_dim), generator=self.generator)
        ro.log_probs[:] = self.model.noise_log_prob(noise).numpy()
        std_noise = (torch.exp(self.model.log_std) * noise).numpy()
        chunk = self._shaping_chunk(n)
        terms: list[np.ndarray] = []
        raw = self._raw_obs
        action_mean = self.model.frozen_actor()  # the weights are fixed within a rollout
        for t in range(t_len):
            obs = self._normalize(raw)
            clip_ids = torch.from_numpy(self.tracker.current)
            mean = action_mean(torch.from_numpy(obs), clip_ids, weights_t)
            np.add(mean.numpy(), std_noise[t], out=ro.actions[t])
            # the env sees clip(a, -1, 1) (a fresh array: it may keep it); the rollout keeps a
            step = env.step(np.minimum(np.maximum(ro.actions[t], -1.0), 1.0))
            self.tracker.on_step(step)
            ro.obs[t], ro.raw_obs[t], ro.clip_ids[t] = obs, raw, step.clip_ids
            ro.terminated[t], ro.truncated[t] = step.terminated, step.truncated
            ended = step.terminated | step.truncated
            if ended.any():
                ro.final_obs[t, ended] = self._normalize(step.final_obs[ended])
            terms.append(step.clip_terms)
            if len(terms) == chunk or t == t_len - 1:
                self._shape_rewards(ro, t + 1 - len(terms), np.stack(terms))
                terms.clear()
            for episode in step.episodes:
                self._report(episode)
            raw = np.asarray(step.obs, dtype=np.float32)
        self._raw_obs = raw
        ro.last_obs = self._normalize(raw)
        if self.obs_norm is not None:
            self.obs_norm.update(ro.raw_obs)  # one Chan merge per rollout
        ro.shaped_rewards = ro.rewards.copy()
        if self.return_scaler is not None:
            ro.rewards = self.return_scaler.scale(ro.rewards, ro.terminated | ro.truncated)
        self.global_step += t_len * n
        ro.seconds = time.perf_counter() - started
        return ro

    def _shaping_chunk(self, num_envs: int, budget_bytes: int = 16 << 20) -> int:
        """Steps whose (N, K, T) clip terms are shaped in one batched call (bounded memory)."""
        per_step = num_envs * self.num_clips * len(self.shaper.term_weights) * 4
        return max(1, min(self.config.rollout_steps, budget_bytes // max(per_step, 1)))

    def _shape_rewards(self, ro: Rollout, start: int, clip_terms: np.ndarray) -> None:
        """Training rewards of steps start..start+len from their (S, N, K, T) clip terms."""
        steps, n = clip_terms.shape[:2]
        ids = ro.clip_ids[start : start + steps].reshape(-1)
        shaped = self.shaper(clip_terms.reshape(steps * n, *clip_terms.shape[2:]), ids)
        ro.rewards[start : start + steps] = shaped.reward.reshape(steps, n)
        self.clip_stats.add_rewards(ids, shaped.clip_rewards[np.arange(ids.size), ids])

    def _report(self, episode: EpisodeEnd) -> None:
        """Send one finished episode to the clip source as an Outcome with a unique id."""
        self.episodes += 1
        self.clip_stats.add_episode(episode)
        self.source.report(
            Outcome(
                episode_id=f"{self.config.learner_id}-{self.session}-{self.episodes:09d}",
                clip_id=episode.clip_id,
                steps=episode.steps,
                episode_return=float(episode.tracking_return),
                success=float(episode.success),
                term_count=int(episode.term_count),
                term_mean=tuple(float(x) for x in episode.term_mean),
                term_m2=tuple(float(x) for x in episode.term_m2),
            )
        )

    # ----- advantages -------------------------------------------------------------------

    @torch.no_grad()
    def advantages(self, ro: Rollout) -> Batch:
        """Values, bootstrap (V(final_obs) on truncation, 0 on a fall), GAE, normalisation."""
        self._finish_critic()  # the values come from the critic after its last update
        t_len, n = ro.rewards.shape
        obs = torch.from_numpy(ro.obs).reshape(t_len * n, -1)
        clip_ids = torch.from_numpy(ro.clip_ids)
        values = self.model.value(obs, clip_ids.reshape(-1)).reshape(t_len, n)
        next_values = torch.zeros_like(values)
        next_values[:-1] = values[1:]
        next_values[-1] = self.model.value(torch.from_numpy(ro.last_obs), clip_ids[-1])
        truncated = torch.from_numpy(ro.truncated)
        if truncated.any():
            idx = truncated.nonzero(as_tuple=True)
            final = torch.from_numpy(ro.final_obs[idx[0].numpy(), idx[1].numpy()])
            next_values[idx] = self.model.value(final, clip_ids[idx])
        terminated = torch.from_numpy(ro.terminated)
        next_values[terminated] = 0.0
        dones = terminated | truncated
        adv, returns = ppo.gae(
            torch.from_numpy(ro.rewards), values, dones, next_values,
            self.config.gamma, self.config.gae_lambda,
        )  # fmt: skip
        flat_ids = clip_ids.reshape(-1)
        adv = adv.reshape(-1)
        adv = (
            ppo.per_clip_normalize_advantages(adv, flat_ids, self.num_clips)
            if self.config.per_clip_adv_norm
            else ppo.normalize_advantages(adv)
        )
        batch = Batch(
            obs=obs,
            actions=torch.from_numpy(ro.actions).reshape(t_len * n, -1),
            log_probs=torch.from_numpy(ro.log_probs).reshape(-1),
            advantages=adv,
            returns=returns.reshape(-1),
            values=values.reshape(-1),
            clip_ids=flat_ids,
            reward_weights=torch.from_numpy(ro.reward_weights),
        )
        if self.experts:
            self._add_expert_targets(batch, ro.raw_obs.reshape(t_len * n, -1))
        return batch

    def _add_expert_targets(self, batch: Batch, raw_obs: np.ndarray) -> None:
        """Each sample's expert action mean/log std (experts see raw obs with their normaliser)."""
        mean = torch.zeros_like(batch.actions)
        log_std = torch.zeros_like(batch.actions)
        has = torch.zeros(batch.size, dtype=torch.bool)
        ids = batch.clip_ids.numpy()
        for clip_id, expert in self.experts.items():
            rows = np.flatnonzero(ids == clip_id)
            if rows.size:
                mean[rows] = expert.mean(raw_obs[rows], self.num_clips)
                log_std[rows] = expert.model.log_std.detach()
                has[rows] = True
        batch.experts = ExpertTargets(mean, log_std, has)

    # ----- update -----------------------------------------------------------------------

    def _entropy_floor(self) -> float | None:
        """h_min while the floor applies (§8: the first ``entropy_floor_steps``), else None."""
        c = self.config
        if c.entropy_floor_steps and self.global_step > c.entropy_floor_steps:
            return None
        return c.entropy_floor

    def update(self, batch: Batch) -> UpdateStats:
        """PPO epochs over shuffled minibatches: the actor's here, the critic's beside them.

        The loss L = sum_i w_i (P_i + beta KL_i) - c_H H + floor penalty + c_v sum_i w_i V_i
        splits into an actor loss (P, KL, entropy terms) and a critic loss (V) with
        disjoint parameters, each with its own Adam and gradient-norm clip, so the two
        sequences of minibatch steps depend only on the batch and on the minibatch order
        (drawn here, once, for both). With ``update_threads`` 2 the critic's epochs run on
        a second thread while the actor's run here and while the next rollout is collected
        (acting needs only the actor); :meth:`advantages` waits for them before it
        evaluates the critic. With 1 they run here after the actor's. Same numbers either
        way; the critic's scalars are logged at this update's step when they are done.
        """
        started = time.perf_counter()
        self._finish_critic()
        c = self.config
        # one gather per tensor and epoch; each minibatch is then a slice (a view)
        epochs = [
            batch.shuffled(torch.randperm(batch.size, generator=self.generator))
            for _ in range(c.update_epochs)
        ]
        stats = self._actor_epochs(batch, epochs)
        self.update_index += 1
        self.last_stats = stats
        if self._critic_pool is not None:
            future = self._critic_pool.submit(self._critic_epochs, epochs)
            self._critic_pending = (future, self.global_step, stats)
        else:
            self._record_critic(self.global_step, stats, self._critic_epochs(epochs))
        stats.seconds = time.perf_counter() - started
        return stats

    def _finish_critic(self) -> None:
        """Wait for the critic's epochs running on the update thread (if any), and log them."""
        if self._critic_pending is None:
            return
        future, step, stats = self._critic_pending
        self._critic_pending = None
        self._record_critic(step, stats, future.result())

    def _record_critic(self, step: int, stats: UpdateStats, critic: CriticStats) -> None:
        """Put the critic's results into its update's stats and TensorBoard (at its step)."""
        stats.value_loss, stats.critic_grad_norm = critic.value_loss, critic.grad_norm
        self.writer.add_scalar("losses/value_loss", critic.value_loss, step)
        self.writer.add_scalar("losses/critic_grad_norm", critic.grad_norm, step)

    def _clip_weights(self, counts: Tensor, squares: Tensor | None) -> tuple[Tensor, Tensor]:
        """(w, alpha): per-clip loss weights of one minibatch for one of the two losses.

        Plain: w_i = n_i / B, so sum_i w_i L_i is the sample mean. GradNorm (§4, from that
        loss's per-clip gradient norms g_i at its last shared layer): alpha_i = g_bar /
        (g_i + eps) over the K' clips present, w_i = alpha_i / K'. alpha is 0 when unused.
        """
        c, present = self.config, counts > 0
        if c.gradnorm and squares is not None:
            alpha = ppo.gradnorm_weights(squares.sqrt(), c.gradnorm_eps, present)
            return alpha / present.sum(), alpha
        return counts / counts.sum(), torch.zeros(self.num_clips)

    def _minibatches(self, epochs: list[Batch]) -> Iterator[tuple[Batch, bool]]:
        """Every minibatch of every epoch, and whether per-clip gradient norms are measured
        on it (each one with GradNorm, else the first of the last epoch, for the logs)."""
        c = self.config
        for index, shuffled in enumerate(epochs):
            for start in range(0, shuffled.size, c.minibatch_size):
                measure = c.gradnorm or (index == len(epochs) - 1 and start == 0)
                yield shuffled.slice(start, start + c.minibatch_size), measure

    def _actor_epochs(self, batch: Batch, epochs: list[Batch]) -> UpdateStats:
        """The actor's minibatch steps; means of their scalars and per-clip measures."""
        k = self.num_clips
        sums: dict[str, float] = {}
        grad_norm_sum, grad_norm_count = np.zeros(k), np.zeros(k)
        weight_sum, kl_sum, kl_count = np.zeros(k), np.zeros(k), np.zeros(k)
        steps = 0
        for minibatch, measure in self._minibatches(epochs):
            out = self._actor_step(minibatch, measure)
            steps += 1
            for key, value in out["scalars"].items():
                sums[key] = sums.get(key, 0.0) + value
            if out["grad_norms"] is not None:
                seen = np.isfinite(out["grad_norms"])
                grad_norm_sum[seen] += out["grad_norms"][seen]
                grad_norm_count += seen
            weight_sum += out["weights"]
            kl_sum += out["kl_sum"]
            kl_count += out["kl_count"]
        var_returns = batch.returns.var()
        with np.errstate(invalid="ignore", divide="ignore"):
            return UpdateStats(
                **{key: value / steps for key, value in sums.items()},
                value_loss=float("nan"),  # filled in when the critic's epochs are done
                explained_variance=float(
                    1.0 - (batch.returns - batch.values).var() / var_returns
                ) if var_returns > 0 else float("nan"),
                clip_grad_norms=grad_norm_sum / grad_norm_count,
                clip_loss_weights=weight_sum / steps,
                clip_kl_experts=kl_sum / kl_count,
            )  # fmt: skip

    def _actor_step(self, mb: Batch, measure: bool) -> dict[str, Any]:
        """One actor step: per-sample losses -> per-clip means -> weighted sum -> Adam.

        L_actor = sum_i w_i (P_i + beta KL_i) - c_H H + c_floor max(0, h_min - H).
        """
        c, k, model = self.config, self.num_clips, self.model
        clip_ids = mb.clip_ids
        counts = torch.bincount(clip_ids, minlength=k).to(torch.float32)  # n_i
        self.actor_optimizer.zero_grad(set_to_none=True)
        mean = model.action_mean(mb.obs, clip_ids, mb.reward_weights)
        log_prob = model.log_prob(mean, mb.actions)
        policy = ppo.clipped_policy_loss(log_prob, mb.log_probs, mb.advantages, c.clip_coef)
        per_sample, kl = policy, None
        if mb.experts is not None:
            kl = ppo.kl_to_experts(
                mb.experts.mean, mb.experts.log_std, mean, model.log_std, mb.experts.has_expert
            )
            per_sample = per_sample + c.kl_beta * kl
        clip_losses, _ = ppo.per_clip_mean(per_sample, clip_ids, k)
        squares = None
        if measure:
            params = model.actor.output_weights()
            squares = ppo.per_clip_grad_squares(clip_losses, counts > 0, params)
        weights, alpha = self._clip_weights(counts, squares)
        entropy = model.entropy_per_dim()
        loss = (weights * clip_losses).sum() - c.entropy_coef * entropy
        penalty = torch.zeros(())
        h_min = self._entropy_floor()
        if h_min is not None:
            penalty = ppo.entropy_floor_penalty(entropy, h_min, c.entropy_floor_coef)
            loss = loss + penalty
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.actor_params, c.max_grad_norm, foreach=True)
        self.actor_optimizer.step()
        kl_sum, kl_count = np.zeros(k), np.zeros(k)
        kl_mean = float("nan")
        with torch.no_grad():
            log_ratio = log_prob - mb.log_probs
            approx_kl = float(((log_ratio.exp() - 1.0) - log_ratio).mean())
            clipfrac = float(((log_ratio.exp() - 1.0).abs() > c.clip_coef).float().mean())
            if kl is not None and mb.experts is not None:
                has = mb.experts.has_expert
                kl_on = kl[has]
                ids = clip_ids[has].numpy()
                kl_sum = np.bincount(ids, kl_on.numpy(), minlength=k).astype(np.float64)
                kl_count = np.bincount(ids, minlength=k).astype(np.float64)
                kl_mean = float(kl_on.mean()) if kl_on.numel() else float("nan")
        if c.desired_kl is not None:
            for group in self.actor_optimizer.param_groups:
                group["lr"] = ppo.adaptive_learning_rate(group["lr"], approx_kl, c.desired_kl)
        scalars = {
            "policy_loss": float(policy.detach().mean()),
            "entropy": float(entropy.detach()),
            "entropy_penalty": float(penalty.detach()),
            "approx_kl": approx_kl,
            "clipfrac": clipfrac,
            "grad_norm": float(grad_norm),
            "learning_rate": float(self.actor_optimizer.param_groups[0]["lr"]),
        }
        if mb.experts is not None:
            scalars["kl_experts"] = kl_mean
        return {
            "scalars": scalars,
            "grad_norms": None if squares is None else squares.sqrt().numpy(),
            "weights": alpha.numpy(),
            "kl_sum": kl_sum,
            "kl_count": kl_count,
        }

    def _critic_epochs(self, epochs: list[Batch]) -> CriticStats:
        """The critic's minibatch steps (on the update thread with ``update_threads`` 2).

        L_critic = c_v sum_i w_i V_i, V the (optionally clipped) squared value error.
        """
        c, k, model = self.config, self.num_clips, self.model
        loss_sum = norm_sum = 0.0
        steps = 0
        for mb, _ in self._minibatches(epochs):
            counts = torch.bincount(mb.clip_ids, minlength=k).to(torch.float32)
            self.critic_optimizer.zero_grad(set_to_none=True)
            values = model.value(mb.obs, mb.clip_ids)
            old_values = mb.values if c.clip_value_loss else None
            value = ppo.value_loss(values, mb.returns, old_values, c.clip_coef)
            clip_losses, _ = ppo.per_clip_mean(c.value_coef * value, mb.clip_ids, k)
            squares = None
            if c.gradnorm:
                params = [model.critic_backbone.last.weight]
                squares = ppo.per_clip_grad_squares(clip_losses, counts > 0, params)
            weights, _ = self._clip_weights(counts, squares)
            (weights * clip_losses).sum().backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.critic_params, c.max_grad_norm, foreach=True
            )
            self.critic_optimizer.step()
            loss_sum += float(value.detach().mean())
            norm_sum += float(grad_norm)
            steps += 1
        return CriticStats(loss_sum / steps, norm_sum / steps)

    # ----- logging ----------------------------------------------------------------------

    def _target_usage(self) -> np.ndarray:
        """u*_i from the scheduler's run state when known, else the sampling probabilities (§1)."""
        watched = None if self.run_state is None else self.run_state.target_usage
        if watched is not None and np.isfinite(watched).all():
            return watched
        if self.actor_config is not None:
            return np.asarray(self.actor_config.clip_probs, dtype=np.float64)
        return np.full(self.num_clips, 1.0 / self.num_clips)

    def log(self, ro: Rollout, stats: UpdateStats) -> None:
        """TensorBoard scalars (§9) and the console progress line."""
        w, step = self.writer, self.global_step
        sps = (step - self._session_start_step) / max(time.perf_counter() - self._started, 1e-9)
        usage, target = self.clip_stats.usage(), self._target_usage()
        window = self.clip_stats.pop_window()
        # the critic's scalars are written when its epochs finish (_record_critic)
        for key in ("policy_loss", "entropy_penalty", "approx_kl", "clipfrac", "grad_norm",
                    "explained_variance", "kl_experts", "learning_rate"):  # fmt: skip
            value = getattr(stats, key)
            if np.isfinite(value):
                w.add_scalar(f"losses/{key}", value, step)
        shaped = ro.shaped_rewards if ro.shaped_rewards is not None else ro.rewards
        charts = {
            "entropy": stats.entropy,
            "steps_per_second": sps,
            "rollout_seconds": ro.seconds,
            "update_seconds": stats.seconds,
            "reward": float(shaped.mean()),
            "usage_l1_error": float(np.abs(usage - target).sum())
            if self.clip_stats.recent
            else None,
        }
        episodes = window["episodes"]
        if episodes.sum() > 0:
            for key in ("success", "episode_length", "tracking_return"):
                charts[key] = float(np.nansum(window[key] * episodes) / episodes.sum())
        for key, value in charts.items():
            if value is not None:
                w.add_scalar(f"charts/{key}", value, step)
        if self.num_clips <= self.config.log_clips_max:
            self._log_clips(usage, target, window, stats)
        self._show_progress(sps, usage, target)
        logger.debug("update %d step %d sps %.0f", self.update_index, step, sps)

    def _log_clips(
        self,
        usage: np.ndarray,
        target: np.ndarray,
        window: dict[str, np.ndarray],
        stats: UpdateStats,
    ) -> None:
        """clips/<name>/<metric> scalars; NaN (no data this window) is skipped."""
        config = self.actor_config
        per_clip = {
            "usage": usage if self.clip_stats.recent else None,
            "target_usage": target,
            "run_usage": None if self.run_state is None else self.run_state.run_usage,
            "clip_prob": None if config is None else config.clip_probs,
            "reward_weight": None if config is None else config.reward_weights,
            "normalized_reward": window["normalized_reward"],
            "success": window["success"],
            "episode_length": window["episode_length"],
            "tracking_return": window["tracking_return"],
            "grad_norm": stats.clip_grad_norms,
            "loss_weight": stats.clip_loss_weights if self.config.gradnorm else None,
            "kl_expert": stats.clip_kl_experts if self.experts else None,
        }
        for key, values in per_clip.items():
            if values is None or len(values) != self.num_clips:
                continue
            for name, value in zip(self.clip_names, values, strict=True):
                if np.isfinite(value):
                    self.writer.add_scalar(f"clips/{name}/{key}", float(value), self.global_step)

    def _show_progress(self, sps: float, usage: np.ndarray, target: np.ndarray) -> None:
        """Advance the bar; the status line shows usage/target per clip (or the L1 gap)."""
        if self._bar is None:
            return
        self._bar.update(self.global_step - self._bar.n)
        self._bar.set_postfix_str(f"sps={sps:,.0f} episodes={self.episodes}", refresh=False)
        if self.num_clips <= 8:
            pairs = zip(self.clip_names, usage, target, strict=True)
            line = "usage/target " + " ".join(f"{n} {u:.2f}/{t:.2f}" for n, u, t in pairs)
        else:
            gap = np.abs(usage - target).sum()
            line = f"usage L1 gap to target {gap:.3f} over {self.num_clips} clips"
        self._status.set_description_str(line)

    # ----- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, path: Path | None = None) -> Path:
        """Model, optimisers, obs normaliser, counters and rng states, written atomically."""
        self._finish_critic()
        path = path or self.config.checkpoint_path
        save_atomic(
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.config.to_dict(),
                "model_config": self.model_config.to_dict(),
                "clip_names": list(self.clip_names),
                "model": self.model.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "obs_norm": None if self.obs_norm is None else self.obs_norm.state_dict(),
                "return_scaler": None
                if self.return_scaler is None
                else self.return_scaler.state_dict(),
                "global_step": self.global_step,
                "update_index": self.update_index,
                "train_seconds": self.elapsed_train_seconds(),
                "episodes": self.episodes,
                "total_episodes": torch.from_numpy(self.clip_stats.total_episodes),
                "torch_rng": torch.get_rng_state(),
                "generator": self.generator.get_state(),
            },
            path,
        )
        logger.info("checkpoint at step %d -> %s", self.global_step, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Resume from a checkpoint written by :meth:`save_checkpoint`."""
        saved = torch.load(path, weights_only=True)
        if saved.get("format") == 1:
            saved = checkpoint_v1_to_v2(saved, self.model)
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: unknown checkpoint format {saved.get('format')!r}")
        saved_model = ModelConfig.from_dict(saved["model_config"])
        if saved_model != self.model_config:
            raise ValueError(f"{path}: model {saved_model} does not match {self.model_config}")
        self.model.load_state_dict(saved["model"])
        for optimizer, key in (
            (self.actor_optimizer, "actor_optimizer"),
            (self.critic_optimizer, "critic_optimizer"),
        ):
            optimizer.load_state_dict(saved[key])
            for group in optimizer.param_groups:  # a loaded state keeps its saver's kernel
                group.update(ADAM_IMPLEMENTATION)
        if self.obs_norm is not None and saved["obs_norm"] is not None:
            self.obs_norm.load_state_dict(saved["obs_norm"])
        if self.return_scaler is not None and saved.get("return_scaler") is not None:
            self.return_scaler.load_state_dict(saved["return_scaler"])
        self.global_step = int(saved["global_step"])
        self.train_seconds = float(saved.get("train_seconds", 0.0))
        self.update_index = int(saved["update_index"])
        self.episodes = int(saved["episodes"])
        self.clip_stats.total_episodes = saved["total_episodes"].numpy().copy()
        torch.set_rng_state(saved["torch_rng"])
        self.generator.set_state(saved["generator"])
        logger.info("resumed from %s at step %d", path, self.global_step)


def checkpoint_v1_to_v2(saved: dict[str, Any], model: ActorCritic) -> dict[str, Any]:
    """A format-1 checkpoint with its one Adam state split into the actor's and the critic's.

    Format 1 kept Adam over ``model.parameters()``; its per-parameter state (step,
    exp_avg, exp_avg_sq) moves unchanged to the optimiser that now owns the parameter.
    """
    joint = saved["optimizer"]
    index = {id(p): i for i, p in enumerate(model.parameters())}
    (group,) = joint["param_groups"]
    converted = dict(saved, format=2)
    del converted["optimizer"]
    for key, params in (
        ("actor_optimizer", model.actor_parameters()),
        ("critic_optimizer", model.critic_parameters()),
    ):
        old = [index[id(p)] for p in params]
        converted[key] = {
            "state": {new: joint["state"][o] for new, o in enumerate(old) if o in joint["state"]},
            "param_groups": [dict(group, params=list(range(len(old))))],
        }
    return converted


# --------------------------------------------------------------------------------------
# Experts (§7)
# --------------------------------------------------------------------------------------


def train_experts(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    env_factory: EnvFactory | None = None,
    clip_names: list[str] | None = None,
) -> dict[str, Path]:
    """Train one single-clip policy per clip with the same loop; save them for ``load_experts``.

    Each expert samples only its clip (static one-hot ``clip_probs``), is rewarded with
    that clip's own raw tracking reward, and is saved as ``<out_dir>/<clip>.pt`` plus an
    ``experts.json`` manifest.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    names = clip_names or _env_clip_names(config, env_factory)
    saved: dict[str, Path] = {}
    for clip_id, name in enumerate(names):
        expert_config = config.with_overrides(
            clip_probs=[1.0 if i == clip_id else 0.0 for i in range(len(names))],
            reward_source="active_clip",
            normalization="none",  # an expert is paid its clip's raw reward in [0, 1]
            kl_experts_path=None,
            scheduler_url=None,
            embedded_scheduler=False,
            run_name=f"{config.run_name}-expert-{_safe_name(name)}",
            checkpoint_dir=str(root / "checkpoints" / _safe_name(name)),
        )
        result = train(expert_config, env_factory=env_factory)
        if result.interrupted:  # its checkpoint resumes it; the expert is not finished
            logger.warning("expert %s interrupted at step %d", name, result.global_step)
            break
        path = root / f"{_safe_name(name)}.pt"
        save_atomic(
            {
                "clip_name": name,
                "clip_id": clip_id,
                "clip_names": list(names),
                "model_config": result.model.config.to_dict(),
                "model": result.model.state_dict(),
                "obs_norm": None if result.obs_norm is None else result.obs_norm.state_dict(),
                "global_step": result.global_step,
            },
            path,
        )
        saved[name] = path
        logger.info("expert %s trained for %d steps -> %s", name, result.global_step, path)
    manifest = {"clips": {name: path.name for name, path in saved.items()}}
    tmp = root / ".experts.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, root / "experts.json")
    return saved


def _env_clip_names(config: TrainConfig, env_factory: EnvFactory | None) -> list[str]:
    """The clip names of the env this config builds."""
    env = (env_factory or ENV_BUILDERS[config.env])(config, lambda: 0)
    try:
        return list(env.clip_names)
    finally:
        env.close()
