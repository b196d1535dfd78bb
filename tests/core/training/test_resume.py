"""Stop a run mid-epoch (asked to, or killed with SIGKILL), resume it, get the uninterrupted
result bit for bit."""

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

from streamguard_core.config import GNNConfig, TrainConfig, TrainJobSpec
from streamguard_core.models.adapters import adapter_for
from streamguard_core.training.loop import (
    TrainingInterrupted,
    fit,
    resume,
    seed_everything,
    setup,
)
from streamguard_core.training.run import RunExistsError, train_neural

GNN = GNNConfig(hidden_dim=16, num_layers=2, node_token_dim=4)
CFG = TrainConfig(epochs=2, batch_size=8, num_threads=1, checkpoint_every_steps=2, seed=7)


@pytest.fixture(scope="module")
def data_dir(make_processed) -> Path:
    return make_processed(pairs=8, vocab_size=400, max_seq_len=128)


def _fresh_state(data_dir: Path, run_dir: Path):
    """What a new process does: seed, build the 2-layer model, ``setup``."""
    seed_everything(CFG.seed)
    model, pad_id = adapter_for("gnn").build(GNN, data_dir)
    return setup("gnn", model, data_dir, run_dir, CFG, device="cpu", pad_id=pad_id)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_stop_mid_epoch_then_resume_is_bit_identical(data_dir, tmp_path):
    straight = _fresh_state(data_dir, tmp_path / "straight")
    fit(straight)

    stopped = _fresh_state(data_dir, tmp_path / "stopped")
    stopped.should_stop = lambda: stopped.global_step >= 5
    with pytest.raises(TrainingInterrupted):
        fit(stopped)
    at_stop = json.loads((stopped.paths.latest / "meta.json").read_text())
    assert (at_stop["epoch"], at_stop["global_step"]) == (0, 5)  # mid first epoch
    assert stopped.paths.metadata.exists() and not stopped.paths.epoch(0).exists()

    torch.manual_seed(12345)  # whatever the RNG holds now, resume restores the saved state
    again = _fresh_state(data_dir, tmp_path / "stopped")
    assert resume(again)
    assert (again.epoch, again.next_batch, again.global_step) == (0, 5, 5)
    fit(again)
    _assert_same_weights(straight.model.state_dict(), again.model.state_dict())
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in again.history]
    assert [h["valid_f1"] for h in straight.history] == [h["valid_f1"] for h in again.history]
    assert again.global_step == straight.global_step

    fresh = _fresh_state(data_dir, tmp_path / "nothing_here")
    assert not resume(fresh) and fresh.global_step == 0


def test_a_run_dir_with_a_checkpoint_needs_resume(data_dir, tmp_path):
    spec = TrainJobSpec(model=GNN, train=CFG.model_copy(update={"epochs": 1}), seed=7,
                        data_dir=str(data_dir), run_dir=str(tmp_path / "run"))  # fmt: skip
    train_neural(spec)
    with pytest.raises(RunExistsError, match="resume"):
        train_neural(spec)


def _job_cmd(spec_file: Path) -> list[str]:
    return [sys.executable, "-m", "streamguard_core.training.job", str(spec_file)]


def _spec_file(data_dir: Path, run_dir: Path) -> Path:
    spec = TrainJobSpec(model=GNN, train=CFG, seed=7, data_dir=str(data_dir), run_dir=str(run_dir))
    path = run_dir.parent / f"{run_dir.name}.json"
    path.write_text(spec.model_dump_json())
    return path


@pytest.mark.slow  # three processes, each importing torch
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_job_cmd(_spec_file(data_dir, straight)), check=True, env=env,
                   capture_output=True)  # fmt: skip

    killed = tmp_path / "killed"
    spec_file = _spec_file(data_dir, killed)
    proc = subprocess.Popen(_job_cmd(spec_file), env=env, stdout=subprocess.DEVNULL,
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
    assert not (killed / "metrics.json").exists() and not (killed / "run_status.json").exists()

    # the same job started again continues from 'latest'
    subprocess.run(_job_cmd(spec_file), check=True, env=env, capture_output=True)

    def weights(run: Path) -> dict[str, torch.Tensor]:
        return torch.load(run / "checkpoints/latest/state.pt", weights_only=True)["model"]

    _assert_same_weights(weights(straight), weights(killed))
    metrics_a = json.loads((straight / "metrics.json").read_text())
    metrics_b = json.loads((killed / "metrics.json").read_text())
    assert metrics_a == metrics_b
    hist_a = json.loads((straight / "training_metadata.json").read_text())["history"]
    hist_b = json.loads((killed / "training_metadata.json").read_text())["history"]
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    assert json.loads((killed / "exp_config.json").read_text())["resumed"] is True
    status = json.loads((killed / "run_status.json").read_text())
    assert status["status"] == "completed" and status["resumed"] is True
