"""Start a policy from another run's checkpoint, across different clip sets.

A single-clip expert that already walks is a good start for a multi-clip policy (walk,
jog, run): its observation is the same except for the clip one-hot at the end. This copies
every weight whose shape agrees; for the first layer of the actor and of the critic it
copies the columns of the shared observation prefix and leaves the one-hot columns at 0
(the saved run's one-hot was a constant, so the new policy acts exactly as the saved one
on every clip until training moves it); each new value head starts from the saved head of
the clip with the same name, else from the saved head 0. The observation normaliser keeps
the saved statistics of the shared prefix; the one-hot columns normalise as mean 0, std 1.
Optimiser state, counters and the scheduler run are not carried over: this is a new run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from learner.clips import clip_name_of
from learner.models import ActorCritic, ModelConfig
from learner.normalization import RunningObsNormalizer
from scheduler_service.algorithms.normalizers import Moments

logger = logging.getLogger(__name__)

FIRST_LAYERS = ("actor.net.layers.0.weight", "critic_backbone.layers.0.weight")


def saved_clip_names(saved: dict[str, object]) -> list[str]:
    """Clip names of a checkpoint (stored since format 2; else derived from its config)."""
    names = saved.get("clip_names")
    if isinstance(names, list):
        return [str(n) for n in names]
    config = saved.get("config")
    clips = config.get("clips", []) if isinstance(config, dict) else []
    return [clip_name_of(Path(c)) if ("/" in c or "." in c) else c for c in clips]


def warm_start(
    model: ActorCritic,
    obs_norm: RunningObsNormalizer | None,
    path: str | Path,
    clip_names: list[str],
    one_hot: bool,
) -> None:
    """Load the weights of checkpoint ``path`` into ``model`` (and ``obs_norm``) in place.

    ``one_hot``: both observations end with a clip one-hot (K columns); the columns before
    it must have the same length in both.
    """
    saved = torch.load(Path(path), weights_only=True)
    old_config = ModelConfig.from_dict(saved["model_config"])
    new_config = model.config
    old_k, new_k = old_config.num_clips, new_config.num_clips
    old_prefix = old_config.obs_dim - (old_k if one_hot else 0)
    new_prefix = new_config.obs_dim - (new_k if one_hot else 0)
    if old_prefix != new_prefix or old_config.hidden != new_config.hidden:
        raise ValueError(
            f"{path}: cannot start from this checkpoint: observation prefix {old_prefix} vs "
            f"{new_prefix}, hidden {old_config.hidden} vs {new_config.hidden}"
        )
    old_names = saved_clip_names(saved)
    source_clip = [old_names.index(n) if n in old_names else 0 for n in clip_names]
    state = model.state_dict()
    for key, value in saved["model"].items():
        if key not in state:
            continue
        target = state[key]
        if key in FIRST_LAYERS:
            target.zero_()
            target[:, :new_prefix] = value[:, :old_prefix]
        elif key.startswith("value_heads.") and value.shape[0] == old_k and old_k > 1:
            target.copy_(value[source_clip])
        elif key.startswith("value_heads.") and value.shape[0] == 1:
            target.copy_(value.expand_as(target))
        elif value.shape == target.shape:
            target.copy_(value)
        else:
            logger.warning("warm start: %s has shape %s, not %s; left as initialised",
                           key, tuple(value.shape), tuple(target.shape))  # fmt: skip
    model.load_state_dict(state)
    if obs_norm is not None and saved.get("obs_norm") is not None:
        old = saved["obs_norm"]
        count = np.full(new_config.obs_dim, float(old["count"].numpy().max()))
        mean = np.zeros(new_config.obs_dim)
        m2 = count.copy()  # variance 1 on the one-hot columns
        mean[:new_prefix] = old["mean"].numpy()[:old_prefix]
        m2[:new_prefix] = old["m2"].numpy()[:old_prefix]
        count[:new_prefix] = old["count"].numpy()[:old_prefix]
        obs_norm.moments = Moments(count, mean, m2)
        obs_norm.load_state_dict(obs_norm.state_dict())  # refresh the cached mean/std
    logger.info("started from %s (clips %s -> %s)", path, old_names, clip_names)


__all__ = ["saved_clip_names", "warm_start"]
