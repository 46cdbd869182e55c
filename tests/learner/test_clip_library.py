"""Clip names that resolve: shipped clips, resolution order, one-line errors, ``clips list``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from learner import clip_library as lib
from learner import clips as cl
from scheduler_service import cli

DEEPMIMIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "deepmimic"
SHIPPED_DIR = Path(str(cl.shipped_motions_dir()))


@pytest.fixture
def no_pybullet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as without the ``clips`` extra, whether or not pybullet is installed."""
    monkeypatch.setitem(sys.modules, "pybullet_data", None)  # import raises ImportError


@pytest.fixture
def fake_pybullet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pybullet_data with walk and run (copies of the shipped files) and a ``jump``."""
    motions = tmp_path / "pybullet_data" / "data" / "motions"
    motions.mkdir(parents=True)
    for name in ("walk", "run"):
        shutil.copy(SHIPPED_DIR / f"humanoid3d_{name}.txt", motions)
    shutil.copy(SHIPPED_DIR / "humanoid3d_jog.txt", motions / "humanoid3d_jump.txt")
    fake = types.ModuleType("pybullet_data")
    fake.getDataPath = lambda: str(tmp_path / "pybullet_data")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pybullet_data", fake)
    return motions


# --- shipped clips ----------------------------------------------------------------------


def test_shipped_clips_are_real_looping_mocap_with_their_licence() -> None:
    assert cl.shipped_motion_names() == list(cl.SHIPPED_CLIPS) == ["walk", "jog", "run"]
    clips = {name: cl.load_shipped(name) for name in cl.SHIPPED_CLIPS}
    for name, clip in clips.items():
        assert clip.name == name
        assert clip.loop
        assert clip.fps == pytest.approx(30.0, rel=1e-3)
        assert 20 <= clip.num_frames <= 60
        assert 0.5 < clip.duration < 2.0
        assert clip.cycle_offset[0] > 0.5  # moves forward each cycle
    assert clips["walk"].duration > clips["jog"].duration > clips["run"].duration
    licence = (cl.shipped_motions_dir() / "LICENSE").read_text()
    assert "MIT License" in licence and "Xue Bin Peng" in licence
    assert "xbpeng/DeepMimic" in (cl.shipped_motions_dir() / "README.md").read_text()


@pytest.mark.skipif(not DEEPMIMIC.is_dir(), reason="../shared/data not present")
def test_shipped_files_are_the_deepmimic_files_unchanged() -> None:
    for name in ("humanoid3d_walk.txt", "humanoid3d_jog.txt", "humanoid3d_run.txt", "LICENSE"):
        assert (SHIPPED_DIR / name).read_bytes() == (DEEPMIMIC / name).read_bytes()


def test_five_clip_example_defaults_to_the_shipped_clips_without_pybullet(
    no_pybullet: None,
) -> None:
    assert cl.default_gait_source() == "shipped"
    clips = {c.name: c for c in cl.five_clip_example()}
    # renaming re-normalises the quaternions: equal up to rounding
    np.testing.assert_allclose(clips["Walk"].qpos, cl.load_shipped("walk").qpos, atol=1e-12)
    np.testing.assert_allclose(clips["Run"].qpos, cl.load_shipped("run").qpos, atol=1e-12)
    assert clips["Walk"].source.endswith("humanoid3d_walk.txt")


def test_shipped_and_pybullet_walk_and_run_give_the_same_five_clips(fake_pybullet: Path) -> None:
    assert cl.default_gait_source() == "pybullet_data"
    from_pybullet = cl.five_clip_example()
    assert from_pybullet[1].source == str(fake_pybullet / "humanoid3d_walk.txt")
    shipped = cl.five_clip_example("shipped")
    for a, b in zip(from_pybullet, shipped, strict=True):
        assert (a.name, a.fps, a.loop) == (b.name, b.fps, b.loop)
        np.testing.assert_array_equal(a.qpos, b.qpos)


def test_builtin_gaits_stay_reachable() -> None:
    clips = cl.five_clip_example("builtin")
    assert clips[1].source == "builtin (synthetic)"


# --- resolution -------------------------------------------------------------------------


def test_names_resolve_files_then_five_clip_then_shipped_then_pybullet(
    tmp_path: Path, fake_pybullet: Path
) -> None:
    own = tmp_path / "my_walk.npz"
    cl.save_npz(cl.load_shipped("walk").renamed("my_walk"), own)
    resolved = lib.resolve_clips([str(own), "Walk", "walk", "jog", "jump"], "builtin")
    assert [c.name for c in resolved] == ["my_walk", "Walk", "walk", "jog", "jump"]
    assert [c.source for c in resolved] == [
        str(own),
        "builtin (synthetic)",  # five-clip example from clip_source
        str(SHIPPED_DIR / "humanoid3d_walk.txt"),  # shipped beats pybullet's walk
        str(SHIPPED_DIR / "humanoid3d_jog.txt"),
        str(fake_pybullet / "humanoid3d_jump.txt"),
    ]
    assert lib.available_names()["walk"] == lib.SOURCE_SHIPPED
    assert lib.available_names()["jump"] == lib.SOURCE_PYBULLET


def test_a_clip_file_wins_over_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("Idle").write_text("{}")  # an existing path named like a clip: read as a file
    with pytest.raises(lib.ClipError, match="Idle: unknown clip format"):
        lib.resolve_clips(["Idle"])


def test_no_clips_means_the_five_clip_example() -> None:
    clips = lib.resolve_clips(None, "builtin", sprint_rate=1.5)
    assert [c.name for c in clips] == list(cl.FIVE_CLIPS)
    assert clips[4].fps == pytest.approx(1.5 * clips[3].fps)


def test_unknown_name_is_one_line_listing_what_is_available(no_pybullet: None) -> None:
    with pytest.raises(lib.ClipError) as info:
        lib.resolve_clips(["jump"], "builtin")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message
    assert message.startswith("unknown clip 'jump': ")
    for name in (*cl.FIVE_CLIPS, "walk", "jog", "run"):
        assert name in message
    assert 'pip install "clip-scheduler[clips]"' in message and "15" in message


def test_unknown_name_with_pybullet_lists_its_clips(fake_pybullet: Path) -> None:
    with pytest.raises(lib.ClipError, match=r"jump \(pybullet\)") as info:
        lib.check_clip_names("humanoid", ["Walk", "jump", "backflip"])
    assert "'backflip'" in str(info.value) and "pip install" not in str(info.value)


def test_missing_clip_file_and_duplicates_are_clip_errors(no_pybullet: None) -> None:
    with pytest.raises(lib.ClipError, match=r"clip file 'nowhere/walk\.txt' does not exist"):
        lib.resolve_clips(["nowhere/walk.txt"])
    with pytest.raises(lib.ClipError, match="unique"):
        lib.resolve_clips(["walk", "walk"])


@pytest.mark.parametrize(
    ("file_name", "content", "fault"),
    [
        ("humanoid3d_bad.txt", '{"Loop": "wrap", "Frames": [[0.03, 1.0', "invalid JSON"),
        ("humanoid3d_bad.txt", '{"Loop": "wrap"}', 'no "Frames"'),
        ("humanoid3d_bad.json", '{"Frames": [[0.03, 1.0], [0.03]]}', "equal-length"),
        ("humanoid3d_bad.txt", '{"Frames": [[0.03, 1.0], [0.03, 2.0]]}', "44 numbers"),
        ("bad.npz", "not a zip", "not a native .npz"),
    ],
)
def test_malformed_clip_file_is_a_one_line_clip_error(
    tmp_path: Path, file_name: str, content: str, fault: str
) -> None:
    path = tmp_path / file_name
    path.write_text(content)
    with pytest.raises(lib.ClipError) as info:
        lib.resolve_clips([str(path)])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"bad clip file {path}: ")
    assert fault in message


def test_planar_names_are_checked_too() -> None:
    lib.check_clip_names("planar", ["Idle", "Sprint"])
    with pytest.raises(lib.ClipError, match=r"unknown clip 'walk'.*planar procedural"):
        lib.check_clip_names("planar", ["walk"])


# --- command line -----------------------------------------------------------------------


def test_clips_list_shows_names_sources_and_lengths(
    no_pybullet: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["clips", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "source", "duration_s", "frames", "loop"]
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    for name in ("walk", "jog", "run"):
        assert rows[name].split()[1:] == ["shipped", *rows[name].split()[2:]]
    assert rows["walk"].split()[-3:] == ["1.267", "39", "yes"]
    assert "five-clip example (shipped)" in rows["Sprint"]
    assert 'pip install "clip-scheduler[clips]"' in out


def test_clips_list_for_the_planar_env(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["clips", "list", "--env", "planar"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[2:]] == list(cl.FIVE_CLIPS)
    assert "planar procedural" in out and "walk" not in out


def test_train_with_an_unknown_clip_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler_service", "train", "--env", "humanoid",
         "--clips", "nosuchclip", "--log-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown clip 'nosuchclip': available are Idle")
    assert not (tmp_path / "runs").exists()


def test_train_with_a_bad_clip_file_or_planar_name_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "humanoid3d_bad.txt"
    bad.write_text(json.dumps({"Frames": "no"}))
    runs = str(tmp_path / "runs")
    assert cli.main(["train", "--env", "humanoid", "--clips", str(bad), "--log-dir", runs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: bad clip file {bad}: ")
    assert cli.main(["train", "--env", "planar", "--clips", "Moonwalk", "--log-dir", runs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown clip 'Moonwalk'")
