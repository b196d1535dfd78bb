"""CUDA checks a CPU run never reaches: AMP in bf16 and fp16 (the GradScaler path) through real
``fit()`` steps, the transformer batch-size probe, and one GPU per seed in the local backend.

Every test is marked ``gpu`` and skips with a reason where CUDA (or a second GPU) is absent.
On the training machine, before a long run::

    pytest -m gpu
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from streamguard_core.config import GNNConfig, TrainConfig, TrainJobSpec, TransformerConfig
from streamguard_core.models.adapters import adapter_for
from streamguard_core.training.loop import TrainState, amp_settings, fit, seed_everything, setup

pytestmark = pytest.mark.gpu

N_GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
DEVICE = "cuda"
needs_cuda = pytest.mark.skipif(
    N_GPUS == 0, reason="no CUDA device (torch.cuda.is_available() is False); run on a GPU machine"
)
needs_two_gpus = pytest.mark.skipif(
    N_GPUS < 2, reason=f"needs 2 CUDA devices, this machine has {N_GPUS}"
)

MAX_SEQ_LEN = 96
MODELS = {
    "gnn": GNNConfig(hidden_dim=16, num_layers=2, node_token_dim=4),
    "transformer": TransformerConfig(hidden_size=32, num_layers=2, max_seq_len=MAX_SEQ_LEN),
}
STEPS = 8


@pytest.fixture(scope="module")
def data_dir(make_processed) -> Path:
    return make_processed(pairs=4, vocab_size=400, max_seq_len=MAX_SEQ_LEN)


def _state(kind: str, data_dir: Path, run_dir: Path, mixed_precision: str) -> TrainState:
    """A fresh model's ``setup`` on the GPU: one epoch of ``STEPS`` optimizer steps."""
    cfg = TrainConfig(epochs=1, batch_size=8, max_steps_per_epoch=STEPS, lr=1e-3,
                      mixed_precision=mixed_precision, checkpoint_every_steps=1000)  # fmt: skip
    seed_everything(cfg.seed)
    model, pad_id = adapter_for(kind).build(MODELS[kind], data_dir)
    return setup(kind, model, data_dir, run_dir, cfg, device=DEVICE, pad_id=pad_id)


def _optimizer_steps_taken(s: TrainState) -> int:
    """How many times AdamW really stepped (its per-parameter step counter)."""
    steps = [int(v["step"]) for v in s.optimizer.state_dict()["state"].values() if "step" in v]
    return max(steps, default=0)


def _weights(s: TrainState) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in s.model.state_dict().items()}


@needs_cuda
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_amp_bf16_trains(kind, data_dir, tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16 support")
    assert amp_settings("auto", torch.device(DEVICE)) == (torch.bfloat16, False)
    s = _state(kind, data_dir, tmp_path, "bf16")
    assert s.amp_dtype == torch.bfloat16 and not s.scaler.is_enabled()
    batch = s.train.make(torch.arange(8).numpy(), s.device)
    with torch.autocast(s.device.type, dtype=s.amp_dtype):
        assert adapter_for(kind).forward(s.model, batch).dtype == torch.bfloat16  # AMP is on
    before = _weights(s)
    fit(s)
    assert s.global_step == STEPS and s.skipped_steps == 0
    assert _optimizer_steps_taken(s) == STEPS
    assert all(math.isfinite(h["train_loss"]) for h in s.history)
    assert any(not torch.equal(before[k], v) for k, v in s.model.state_dict().items())
    meta = json.loads(s.paths.metadata.read_text())
    assert meta["amp_dtype"] == "torch.bfloat16" and meta["device"].startswith(DEVICE)


@needs_cuda
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_amp_fp16_goes_through_the_grad_scaler(kind, data_dir, tmp_path):
    """fp16 scales the loss; a step whose gradients overflow is skipped and halves the scale,
    every other step is applied: steps taken + steps skipped == optimizer steps counted."""
    s = _state(kind, data_dir, tmp_path, "fp16")
    assert s.amp_dtype == torch.float16 and s.scaler.is_enabled()
    initial_scale = s.scaler.get_scale()
    before = _weights(s)
    fit(s)
    assert s.global_step == STEPS
    taken = _optimizer_steps_taken(s)
    assert taken == s.global_step - s.skipped_steps > 0
    # the scaler grows only every 2000 clean steps, so here it can only have been halved
    assert s.scaler.get_scale() == initial_scale * 0.5**s.skipped_steps
    assert all(math.isfinite(h["train_loss"]) for h in s.history)
    assert any(not torch.equal(before[k], v) for k, v in s.model.state_dict().items())
    assert json.loads(s.paths.metadata.read_text())["amp_dtype"] == "torch.float16"


@needs_cuda
def test_transformer_memory_probe_halves_until_a_batch_fits(data_dir):
    from streamguard_core.training.batch_size import auto_batch_size, probe_batch_size

    model_cfg = TransformerConfig(hidden_size=128, num_layers=2, max_seq_len=MAX_SEQ_LEN)
    model, pad_id = adapter_for("transformer").build(model_cfg, data_dir)
    assert probe_batch_size("transformer", model, data_dir, pad_id, 8, DEVICE) == 8

    cfg, note = auto_batch_size("transformer", model, model_cfg,
                                TrainConfig(batch_size=16, auto_batch_size=True), data_dir,
                                pad_id, DEVICE)  # fmt: skip
    assert cfg.batch_size == note["chosen"] == 16 and "CUDA probe" in note["method"]
    assert note["memory_budget_mb"] > 0

    # cap this process at 1 GiB: 32768 sequences of ~96 tokens need tens of GB, so the probe
    # must hit out-of-memory and halve to a batch that fits
    requested = 2**15
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(2**30 / total)
    try:
        chosen = probe_batch_size("transformer", model, data_dir, pad_id, requested, DEVICE)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert 1 <= chosen < requested and requested % chosen == 0  # halved, a power of two


@needs_cuda
def test_a_cuda_slot_is_the_childs_only_visible_gpu():
    """``cuda:<i>`` becomes the one GPU the job's process sees: the same physical device."""
    from streamguard_core.backends.local import child_environment, local_devices

    slot = N_GPUS - 1
    env, device = child_environment(f"cuda:{slot}")
    assert device == "cuda"
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        assert env == {"CUDA_VISIBLE_DEVICES": str(slot)}
    code = (
        "import torch; print(torch.cuda.device_count(), torch.cuda.get_device_properties(0).uuid)"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    count, uuid = out.stdout.split(maxsplit=1)
    assert int(count) == 1
    assert uuid.strip() == str(torch.cuda.get_device_properties(slot).uuid)
    assert local_devices() == ([None] if N_GPUS == 1 else [f"cuda:{i}" for i in range(N_GPUS)])


def _gnn_job(data_dir: Path, run_dir: Path, seed: int) -> TrainJobSpec:
    return TrainJobSpec(
        model=MODELS["gnn"],
        train=TrainConfig(epochs=1, batch_size=8, max_steps_per_epoch=3),
        seed=seed,
        data_dir=str(data_dir),
        run_dir=str(run_dir),
    )


@needs_cuda
def test_local_backend_trains_a_seed_on_a_gpu(data_dir, tmp_path):
    from streamguard_core.backends.local import LocalBackend

    status = LocalBackend().run(_gnn_job(data_dir, tmp_path / "seed_1", 1), device="cuda:0")
    assert status.status == "completed", status.error
    meta = json.loads((tmp_path / "seed_1" / "training_metadata.json").read_text())
    assert meta["device"].startswith(DEVICE)


@needs_two_gpus
def test_two_seeds_train_at_once_one_gpu_each(data_dir, tmp_path):
    from streamguard_core.backends.local import LocalBackend

    backend = LocalBackend()
    results: dict[int, object] = {}

    def run(slot: int) -> None:
        spec = _gnn_job(data_dir, tmp_path / f"seed_{slot}", seed=slot)
        results[slot] = backend.run(spec, device=f"cuda:{slot}")

    threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert sorted(results) == [0, 1]
    for slot, status in results.items():
        assert status.status == "completed", (slot, status.error)  # type: ignore[attr-defined]
        meta = json.loads((tmp_path / f"seed_{slot}" / "training_metadata.json").read_text())
        assert meta["device"].startswith(DEVICE)
