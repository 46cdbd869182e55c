"""Starting a run from another run's checkpoint when the clip sets differ (``init_from``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.config import TrainConfig
from learner.train import Learner, train


def _config(tmp_path: Path, name: str, clips: tuple[str, ...], **values: object) -> TrainConfig:
    return TrainConfig(
        env="planar", clips=clips, num_envs=4, rollout_steps=16, minibatch_size=32,
        update_epochs=1, total_steps=128, progress=False, log_dir=str(tmp_path), run_name=name,
    ).with_overrides(**values)  # fmt: skip


def test_a_two_clip_run_starts_acting_like_its_one_clip_parent(tmp_path: Path) -> None:
    parent = train(_config(tmp_path, "parent", ("Walk",)))
    child_config = _config(
        tmp_path, "child", ("Idle", "Walk"), init_from=str(parent.checkpoint_path)
    )
    with contextlib.ExitStack() as stack:
        child = Learner.open(child_config, None, None, stack)
        rng = np.random.default_rng(0)
        raw = rng.normal(size=(6, child.env.obs_dim)).astype(np.float32)
        raw[:, -2:] = np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 0, 1]]  # the clip one-hot
        parent_raw = np.concatenate([raw[:, :-2], np.ones((6, 1), np.float32)], axis=1)
        assert parent.obs_norm is not None and child.obs_norm is not None
        ids = torch.tensor([0, 1, 0, 1, 0, 1])
        with torch.no_grad():
            want = parent.model.action_mean(
                torch.from_numpy(parent.obs_norm.normalize(parent_raw)),
                torch.zeros(6, dtype=torch.long),
                torch.ones(1),
            )
            got = child.model.action_mean(
                torch.from_numpy(child.obs_norm.normalize(raw)), ids, torch.full((2,), 0.5)
            )
        # every clip, the parent's own and the new one, starts with the parent's actions
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(child.model.log_std, parent.model.log_std)
        heads = child.model.value_heads.weight
        torch.testing.assert_close(heads[0], heads[1])  # both heads from the parent's one
        assert child.global_step == 0  # a new run, not a resume


def test_a_checkpoint_with_another_observation_is_refused(tmp_path: Path) -> None:
    parent = train(_config(tmp_path, "parent", ("Walk",)))
    child_config = _config(
        tmp_path, "child", ("Walk",), skill_one_hot=False, init_from=str(parent.checkpoint_path)
    )
    with contextlib.ExitStack() as stack, pytest.raises(ValueError, match="observation"):
        Learner.open(child_config, None, None, stack)
