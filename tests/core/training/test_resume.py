"""Kill a training process with SIGKILL mid-epoch, resume it, and get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def data_dir(make_processed) -> Path:
    return make_processed(pairs=8, vocab_size=400, max_seq_len=128)


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "streamguard_core", "train", "gnn", "--data", str(data),
        "--output-dir", str(out), "--epochs", "2", "--batch-size", "8", "--hidden-dim", "16",
        "--num-layers", "2", "--num-threads", "1", "--checkpoint-every-steps", "2",
        "--seed", "7", *extra,
    ]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "latest" / "state.pt", weights_only=True)
    return state["model"]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_cmd(data_dir, straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(data_dir, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    meta = killed / "checkpoints" / "latest" / "meta.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if meta.exists() and json.loads(meta.read_text())["global_step"] >= 4:
                break
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint appeared within 120 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    at_kill = json.loads(meta.read_text())
    assert at_kill["epoch"] == 0  # killed in the middle of the first epoch
    assert not (killed / "metrics.json").exists()

    # a plain re-run refuses to overwrite; --resume continues
    again = subprocess.run(_cmd(data_dir, killed), env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "--resume" in again.stderr
    subprocess.run(_cmd(data_dir, killed, "--resume"), check=True, env=env, capture_output=True)

    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    metrics_a = json.loads((straight / "metrics.json").read_text())
    metrics_b = json.loads((killed / "metrics.json").read_text())
    assert metrics_a == metrics_b
    hist_a = json.loads((straight / "training_metadata.json").read_text())["history"]
    hist_b = json.loads((killed / "training_metadata.json").read_text())["history"]
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    assert json.loads((killed / "exp_config.json").read_text())["resumed"] is True
