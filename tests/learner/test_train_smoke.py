"""End-to-end smoke of the training loop on tiny budgets: episodes, logs, checkpoints, CLI."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from clipsched.clip_source import StaticClipSource
from learner.cli import build_train_parser, config_from_args, run_train
from learner.config import TrainConfig, field_docs, load_config
from learner.envs.base import NextClip
from learner.train import ClipTracker, embedded_scheduler, train, train_experts
from tests.learner.fake_env import FakeVecEnv

CLIPS = ["Idle", "Walk", "Run"]


def fake_env(config: TrainConfig, next_clip: NextClip) -> FakeVecEnv:
    return FakeVecEnv(
        CLIPS, config.num_envs, next_clip, skill_one_hot=config.skill_one_hot, seed=config.seed
    )


def tiny_config(tmp_path: Path, **overrides: object) -> TrainConfig:
    base = TrainConfig(
        num_envs=4,
        rollout_steps=32,
        minibatch_size=64,
        update_epochs=2,
        hidden=(16,),
        total_steps=4 * 32 * 3,
        log_dir=str(tmp_path / "runs"),
        run_name="smoke",
        progress=False,
        norm_min_count=50,
        checkpoint_every=1,
    )
    return base.with_overrides(**overrides)


def scalar_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def scalar_events(run_dir: Path, tag: str) -> list[Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return list(accumulator.Scalars(tag))


def test_training_runs_end_to_end_and_reports_every_episode_once(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    source = StaticClipSource(CLIPS, FakeVecEnv.term_names, np.array([0.5, 0.3, 0.2]), seed=1)
    result = train(config, env_factory=fake_env, clip_source=source)

    assert result.global_step == config.num_updates * config.batch_size
    assert result.updates == config.num_updates
    ids = [o.episode_id for o in source.outcomes]
    assert len(ids) == result.episodes > 0
    assert len(set(ids)) == len(ids)
    assert all(i.startswith(config.learner_id) for i in ids)
    assert {o.clip_id for o in source.outcomes} <= {0, 1, 2}
    assert all(o.term_count == o.steps and len(o.term_mean) == 2 for o in source.outcomes)
    assert source.actor_config().norm_count.sum() > 0  # the normalisers were fed
    assert result.checkpoint_path.exists()

    tags = scalar_tags(config.run_dir)
    for name in CLIPS:
        assert f"clips/{name}/target_usage" in tags
        assert f"clips/{name}/grad_norm" in tags
    assert {f"clips/{name}/usage" for name in CLIPS} & tags
    expected = {
        "charts/steps_per_second",
        "charts/entropy",
        "losses/policy_loss",
        "losses/value_loss",
    }
    assert expected <= tags
    assert any(t.endswith("/normalized_reward") for t in tags)
    assert any(t.endswith("/success") for t in tags)
    assert any(t.endswith("/episode_length") for t in tags)


def test_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    first = train(tiny_config(tmp_path, total_steps=4 * 32 * 2), env_factory=fake_env)
    saved = {k: v.clone() for k, v in first.model.state_dict().items()}
    assert not list(first.checkpoint_path.parent.glob("*.tmp"))

    again = train(tiny_config(tmp_path, total_steps=4 * 32 * 2), env_factory=fake_env)
    assert again.global_step == first.global_step and again.updates == first.updates
    for key, value in again.model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert again.obs_norm is not None and first.obs_norm is not None
    assert again.obs_norm.count == first.obs_norm.count

    longer = train(tiny_config(tmp_path, total_steps=4 * 32 * 4), env_factory=fake_env)
    assert longer.updates == 4
    assert longer.global_step == 4 * 4 * 32
    assert longer.episodes > first.episodes


def test_training_with_a_scheduler_reports_every_episode_to_the_run(tmp_path: Path) -> None:
    pytest.importorskip("scheduler_service.api.app")
    import httpx

    with embedded_scheduler(str(tmp_path / "scheduler.db")) as url:
        config = tiny_config(tmp_path, scheduler_url=url, run_state_every_s=0.05)
        result = train(config, env_factory=fake_env)
        state = httpx.get(f"{url}/runs/{config.run_name}").json()
    assert [clip["name"] for clip in state["clips"]] == CLIPS
    assert state["totals"]["episodes"] == result.episodes > 0
    assert {f"clips/{name}/target_usage" for name in CLIPS} <= scalar_tags(config.run_dir)


def test_fresh_run_without_resume_starts_from_zero(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, total_steps=4 * 32), env_factory=fake_env)
    fresh = train(tiny_config(tmp_path, total_steps=4 * 32, resume=False), env_factory=fake_env)
    assert fresh.updates == 1


def test_gradnorm_moe_and_kl_to_experts_train_together(tmp_path: Path) -> None:
    expert_config = tiny_config(tmp_path, total_steps=4 * 32, run_name="experts")
    saved = train_experts(expert_config, tmp_path / "experts", env_factory=fake_env)
    assert sorted(saved) == sorted(CLIPS)
    assert json.loads((tmp_path / "experts" / "experts.json").read_text())["clips"].keys() == set(
        CLIPS
    )

    config = tiny_config(
        tmp_path,
        gradnorm=True,
        moe_experts=2,
        kl_experts_path=str(tmp_path / "experts"),
        kl_beta=0.05,
        run_name="shared",
    )
    result = train(config, env_factory=fake_env)
    stats = result.last_stats
    assert np.isfinite(stats.kl_experts) and stats.kl_experts >= 0.0
    present = stats.clip_loss_weights > 0
    assert present.any()
    assert np.isfinite(stats.clip_grad_norms[present]).all()
    tags = scalar_tags(config.run_dir)
    assert "losses/kl_experts" in tags
    assert any(t.endswith("/loss_weight") for t in tags)
    assert any(t.endswith("/kl_expert") for t in tags)


def test_policy_learns_to_track_every_clip_of_the_fake_env(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path,
        num_envs=8,
        rollout_steps=64,
        minibatch_size=256,
        update_epochs=4,
        hidden=(32, 32),
        total_steps=8 * 64 * 24,
        learning_rate=3e-3,
        activation="tanh",  # learns this toy in fewer updates than the default ReLU
        checkpoint_every=0,
        reward_source="active_clip",
    )
    source = StaticClipSource(CLIPS, FakeVecEnv.term_names, seed=0)
    train(config, env_factory=fake_env, clip_source=source)
    for clip in range(len(CLIPS)):
        per_step = [o.episode_return / o.steps for o in source.outcomes if o.clip_id == clip]
        early, late = np.mean(per_step[:10]), np.mean(per_step[-10:])
        assert late > max(early, 0.7), (CLIPS[clip], early, late)


def test_clip_tracker_rejects_an_env_that_skips_next_clip() -> None:
    class Source:
        def next_clip(self) -> int:
            return 1

    tracker = ClipTracker(Source())  # type: ignore[arg-type]
    env = FakeVecEnv(CLIPS, 2, lambda: 0)
    env.reset()
    with pytest.raises(RuntimeError):
        tracker.on_reset(2)


def test_cli_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text('num_envs = 3\nclips = ["Walk", "Run"]\naggregation = "lse"\ngradnorm = true\n')
    parser = build_train_parser(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--config",
            str(path),
            "--num-envs",
            "5",
            "--no-gradnorm",
            "--hidden",
            "32,16",
            "--kl-experts-path",
            "none",
        ]
    )
    config = config_from_args(args)
    assert config.num_envs == 5
    assert config.clips == ("Walk", "Run")
    assert config.aggregation == "lse"
    assert config.gradnorm is False
    assert config.hidden == (32, 16)
    assert config.kl_experts_path is None
    assert config_from_args(parser.parse_args([])) == TrainConfig.for_env("planar")


def test_config_files_reject_unknown_fields_and_bad_values(tmp_path: Path) -> None:
    unknown = tmp_path / "bad.json"
    unknown.write_text(json.dumps({"num_envz": 3}))
    with pytest.raises(ValueError, match="num_envz"):
        load_config(unknown)
    bad_choice = tmp_path / "bad.toml"
    bad_choice.write_text('aggregation = "mean"\n')
    with pytest.raises(ValueError, match="aggregation"):
        load_config(bad_choice)
    with pytest.raises(ValueError, match="num_envs"):
        TrainConfig(num_envs=0)


def test_every_config_field_has_a_docstring() -> None:
    docs = field_docs()
    missing = [name for name in TrainConfig.__dataclass_fields__ if not docs.get(name)]
    assert missing == []


def test_train_command_trains_the_planar_env_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("learner.envs.planar")
    parser = build_train_parser(argparse.ArgumentParser())
    flags = [
        "--env",
        "planar",
        "--num-envs",
        "4",
        "--rollout-steps",
        "32",
        "--minibatch-size",
        "64",
    ]
    flags += ["--hidden", "32", "--no-progress", "--log-dir", str(tmp_path / "runs")]
    flags += ["--run-name", "cli", "--aggregation", "lse", "--gradnorm"]
    assert run_train(parser.parse_args([*flags, "--total-steps", "128"])) == 0
    checkpoint = TrainConfig(log_dir=str(tmp_path / "runs"), run_name="cli").checkpoint_path
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 128
    assert run_train(parser.parse_args([*flags, "--total-steps", "256"])) == 0
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 256
    tags = scalar_tags(tmp_path / "runs" / "cli" / "learner0")
    assert {"clips/Walk/target_usage", "clips/Sprint/grad_norm", "clips/Idle/loss_weight"} <= tags


def test_dump_config_prints_the_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_train_parser(argparse.ArgumentParser())
    assert run_train(parser.parse_args(["--dump-config", "--moe-experts", "3"])) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["moe_experts"] == 3
    path = tmp_path / "dumped.json"
    path.write_text(json.dumps(dumped))
    assert load_config(path) == TrainConfig.for_env("planar", moe_experts=3)


def test_update_threads_2_gives_the_same_training_as_one_thread(tmp_path: Path) -> None:
    # the actor's and the critic's epochs touch disjoint parameters and draw their
    # minibatches from one order: the critic on its own thread, overlapping the next
    # rollout, must give the same parameters and the same value losses
    results = []
    for threads in (1, 2):
        config = tiny_config(
            tmp_path / str(threads), update_threads=threads, gradnorm=True, resume=False
        )
        results.append(train(config, env_factory=fake_env))
    for (name, one), (_, two) in zip(
        results[0].model.state_dict().items(), results[1].model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(one, two, msg=name)
    assert np.isfinite(results[1].last_stats.clip_grad_norms).any()
    assert np.isfinite(results[1].last_stats.value_loss)
    assert results[0].last_stats.value_loss == results[1].last_stats.value_loss
    for threads in (1, 2):  # every update's value loss is logged, the last one included
        events = scalar_events(tiny_config(tmp_path / str(threads)).run_dir, "losses/value_loss")
        assert [e.step for e in events] == [128, 256, 384]


def test_the_critic_trains_while_the_next_rollout_is_collected(tmp_path: Path) -> None:
    from learner.train import Learner

    config = tiny_config(tmp_path, update_threads=2, resume=False)
    with contextlib.ExitStack() as stack:
        learner = Learner.open(config, fake_env, None, stack)
        critic = [p.detach().clone() for p in learner.model.critic_parameters()]
        batch = learner.advantages(learner.collect_rollout())
        stats = learner.update(batch)
        assert learner._critic_pending is not None  # the critic's to finish: the loop goes on
        pending = learner._critic_pending[0]
        learner.collect_rollout()
        learner.advantages(learner.collect_rollout())  # waits for the critic first
        assert pending.done() and learner._critic_pending is None
        assert np.isfinite(stats.value_loss)
        after = learner.model.critic_parameters()
        assert all(not torch.equal(a, b) for a, b in zip(critic, after, strict=True))


def test_a_format_1_checkpoint_resumes_with_its_adam_state_split(tmp_path: Path) -> None:
    from learner.train import Learner

    first = train(tiny_config(tmp_path, total_steps=4 * 32 * 2), env_factory=fake_env)
    saved = torch.load(first.checkpoint_path, weights_only=True)
    model = first.model
    # the same optimiser state as format 1 stored it: one Adam over model.parameters()
    owner = {id(p): (key, i) for key, params in (
        ("actor_optimizer", model.actor_parameters()),
        ("critic_optimizer", model.critic_parameters()),
    ) for i, p in enumerate(params)}  # fmt: skip
    joint_state = {}
    for j, param in enumerate(model.parameters()):
        key, i = owner[id(param)]
        joint_state[j] = saved[key]["state"][i]
    group = dict(saved["actor_optimizer"]["param_groups"][0])
    group["params"] = list(range(len(joint_state)))
    old = {k: v for k, v in saved.items() if not k.endswith("_optimizer")}
    old.update(format=1, optimizer={"state": joint_state, "param_groups": [group]})
    torch.save(old, first.checkpoint_path)

    with contextlib.ExitStack() as stack:
        learner = Learner.open(tiny_config(tmp_path), fake_env, None, stack)
        assert learner.global_step == first.global_step
        for key in ("actor_optimizer", "critic_optimizer"):
            loaded = getattr(learner, key).state_dict()["state"]
            assert loaded.keys() == saved[key]["state"].keys()
            for i, state in saved[key]["state"].items():
                for name, value in state.items():
                    torch.testing.assert_close(loaded[i][name], value)


def test_update_threads_must_be_1_or_2() -> None:
    with pytest.raises(ValueError, match="update_threads"):
        TrainConfig(update_threads=3)


def test_backward_precision_must_be_a_known_one() -> None:
    with pytest.raises(ValueError, match="backward_precision"):
        TrainConfig(backward_precision="float16")  # type: ignore[arg-type]


def test_shuffled_minibatch_slices_are_the_rows_of_the_permutation() -> None:
    from learner.train import Batch

    g = torch.Generator().manual_seed(0)
    n = 10
    batch = Batch(
        obs=torch.randn(n, 3, generator=g),
        actions=torch.randn(n, 2, generator=g),
        log_probs=torch.randn(n, generator=g),
        advantages=torch.randn(n, generator=g),
        returns=torch.randn(n, generator=g),
        values=torch.randn(n, generator=g),
        clip_ids=torch.randint(0, 3, (n,), generator=g),
        reward_weights=torch.ones(3),
    )
    order = torch.randperm(n, generator=g)
    part = batch.shuffled(order).slice(4, 8)
    rows = order[4:8]
    for name in ("obs", "actions", "log_probs", "advantages", "returns", "values", "clip_ids"):
        assert torch.equal(getattr(part, name), getattr(batch, name)[rows]), name
    assert part.size == 4
