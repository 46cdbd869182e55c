"""``clipsched render``: the filmstrip and GIF of a tiny checkpoint beside its reference clip.

Small images (160x120) and short rollouts keep it fast. Tests that draw are skipped when
no offscreen OpenGL backend (EGL or OSMesa) works on the machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learner import render as rd
from learner.config import TrainConfig
from learner.envs.builders import ENV_BUILDERS
from learner.train import train
from scheduler_service.cli import main

W, H = 160, 120
GAP = 4  # between filmstrip cells


@pytest.fixture(scope="module")
def backend() -> str:
    chosen = rd.gl_backend()
    if chosen is None:
        pytest.skip("no offscreen OpenGL backend (EGL or OSMesa) works on this machine")
    return chosen


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A humanoid policy on the built-in Walk after one tiny PPO update."""
    runs = tmp_path_factory.mktemp("runs")
    config = TrainConfig(
        env="humanoid",
        clips=("Walk",),
        num_envs=2,
        rollout_steps=8,
        total_steps=16,
        minibatch_size=16,
        update_epochs=1,
        hidden=(16,),
        progress=False,
        log_dir=str(runs),
        run_name="r",
        scheduler_url=None,
    )
    return train(config).checkpoint_path


def gif_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a GIF as (H, W, 3) uint8."""
    frames = []
    with Image.open(path) as image:
        for i in range(image.n_frames):
            image.seek(i)
            frames.append(np.asarray(image.convert("RGB")))
    return frames


def strip_cell(png: Path, rows: int, row: int, column: int) -> np.ndarray:
    """One cell of a filmstrip (the header height is what the rows leave)."""
    strip = np.asarray(Image.open(png).convert("RGB"))
    top = strip.shape[0] - rows * (H + GAP) + row * (H + GAP)
    left = GAP + column * (W + GAP)
    return strip[top : top + H, left : left + W]


def test_checkpoint_renders_a_filmstrip_and_a_gif_of_policy_and_reference(
    backend: str, checkpoint: Path, tmp_path: Path
) -> None:
    result = rd.render_checkpoint(
        checkpoint, tmp_path, seconds=1.0, fps=10, width=W, height=H, frames_in_strip=4
    )

    assert result.backend == backend
    assert result.clip == "Walk" and result.global_step == 16
    assert result.steps == 30  # 1 s at 30 Hz control
    assert 1 <= result.episode_steps <= result.steps
    assert result.tracking_reward is not None and 0.0 <= result.tracking_reward <= 1.0
    assert result.png == tmp_path / "render_Walk.png" and result.png.is_file()

    frames = gif_frames(result.gif)
    assert len(frames) == result.frames == 11  # t = 0, 0.1, ..., 1.0 s
    assert frames[0].shape == (H, 2 * W, 3)  # policy | reference
    policy, reference = frames[0][:, :W].astype(float), frames[0][:, W:].astype(float)
    assert policy.var() > 0 and reference.var() > 0
    assert np.abs(policy - reference).mean() > 1.0  # orange character vs blue ghost

    with Image.open(result.png) as strip:
        assert strip.width == 4 * W + 5 * GAP
        assert strip.height > 2 * (H + GAP)  # header + policy row + reference row
    assert len(result.strip_steps) == 4 and result.strip_steps[0] == 0
    assert result.strip_steps[-1] == result.steps


def test_a_termination_is_marked_and_the_rollout_goes_on(
    backend: str, checkpoint: Path, tmp_path: Path
) -> None:
    """A root-height tolerance no character meets ends the episode at its first step."""
    result = rd.render_checkpoint(
        checkpoint,
        tmp_path,
        seconds=0.5,
        fps=10,
        width=W,
        height=H,
        frames_in_strip=3,
        config_overrides={"root_height_termination": 1e-9},
    )

    assert result.terminated and result.episode_steps == 1
    assert "terminated at step 1" in result.summary()
    assert len(gif_frames(result.gif)) == result.frames == 6  # the ghost keeps playing
    assert 1 in result.strip_steps  # the strip shows the frame where it ended
    first, ended = strip_cell(result.png, 2, 0, 0), strip_cell(result.png, 2, 0, 1)
    red = np.array(rd.ENDED_RGB)
    assert np.abs(ended[1, 1].astype(int) - red).max() < 10  # red border from then on
    assert np.abs(first[1, 1].astype(int) - red).max() > 60
    reference_cell = strip_cell(result.png, 2, 1, 1)
    assert np.abs(reference_cell[1, 1].astype(int) - red).max() > 60


def test_reference_only_renders_one_row(backend: str, tmp_path: Path) -> None:
    result = rd.render_reference(
        tmp_path, clips=["Walk"], seconds=0.5, fps=10, width=W, height=H, frames_in_strip=3
    )

    assert result.tracking_reward is None and not result.terminated
    assert result.png.name == "reference_Walk.png"
    frames = gif_frames(result.gif)
    assert len(frames) == 6 and frames[0].shape == (H, W, 3)
    assert frames[0].astype(float).var() > 0
    assert not np.array_equal(frames[0], frames[-1])  # the ghost walks
    with Image.open(result.png) as strip:
        assert strip.size[0] == 3 * W + 4 * GAP
        assert H + GAP < strip.size[1] < 2 * (H + GAP)


def test_planar_reference_renders(backend: str, tmp_path: Path) -> None:
    result = rd.render_reference(
        tmp_path, env="planar", clip="run", seconds=0.3, fps=10, width=W, height=H
    )
    assert result.clip == "Run" and result.frames == 4
    assert gif_frames(result.gif)[0].astype(float).var() > 0


@pytest.mark.parametrize("env_name", ["humanoid", "planar"])
def test_rig_targets_are_what_the_env_applies(env_name: str) -> None:
    """The rig redoes a terminating step itself, so its targets must match the env's."""
    env = ENV_BUILDERS[env_name](TrainConfig(env=env_name, num_envs=1, clips=()), lambda: 1)
    rig = rd._rig(env)
    env.reset(seed=0)
    rig.start(1, 0.25)
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, (1, env.action_dim))
    expected = rig.targets(actions)
    step = env.step(actions)
    assert not (step.terminated[0] or step.truncated[0])
    np.testing.assert_allclose(env.data.ctrl, expected.reshape(-1))
    track = rig.reference_track(1, 0.25, 3)
    assert track.shape == (4, env.data.qpos.shape[0])


def test_cli_renders_and_prints_the_paths(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "render",
        "--reference-only",
        "--clips",
        "Walk",
        "--seconds",
        "0.2",
        "--fps",
        "10",
        "--frames",
        "2",
    ]
    code = main([*args, "--size", f"{W}x{H}", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"png: {tmp_path / 'reference_Walk.png'}" in out
    assert "gif: " in out and "Walk: reference only, 6 steps" in out


def test_cli_errors_are_one_line_and_exit_2(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint at" in err

    assert main(["render", str(checkpoint), "--out", str(tmp_path), "--clip", "Moonwalk"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown clip 'Moonwalk'" in err and "Walk" in err

    assert main(["render", "--out", str(tmp_path)]) == 2
    assert "CHECKPOINT" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["render", str(checkpoint), "--out", str(tmp_path), "--size", "big"])
    assert exit_info.value.code == 2
