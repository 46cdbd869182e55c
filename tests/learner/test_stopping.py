"""One SIGINT (or SIGTERM) stops ``clipsched train`` cleanly: the update in flight finishes,
the checkpoint is written, the process exits by itself with 130; the same command resumes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.service_processes import VENV_BIN, base_env


def _train_command(tmp_path: Path) -> list[str]:
    return [
        str(VENV_BIN / "clipsched"), "train", "--env", "planar", "--num-envs", "4",
        "--rollout-steps", "32", "--minibatch-size", "64", "--update-epochs", "1",
        "--total-steps", "100000000", "--checkpoint-every", "1", "--no-progress",
        "--log-dir", str(tmp_path / "runs"), "--run-name", "stop",
    ]  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_one_signal_stops_training_with_a_checkpoint(tmp_path: Path, signum: int) -> None:
    checkpoint = tmp_path / "runs" / "stop" / "learner0" / "checkpoints" / "latest.pt"
    proc = subprocess.Popen(
        _train_command(tmp_path),
        env=base_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        assert checkpoint.exists(), "training never wrote its first checkpoint"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "stopped at step" in stderr
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] > 0 and saved["update_index"] >= 1
