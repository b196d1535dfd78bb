"""The training loop through ``setup -> fit -> evaluate_best`` with a 2-layer model, and the
safety paths of a whole job (``run_job``): injected NaN loss, constant predictions, every file
written, the LR finder and its cache, and scoring a raw file like training did."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from streamguard_core.config import GNNConfig, TrainConfig, TrainJobSpec, TransformerConfig
from streamguard_core.io import read_jsonl, write_jsonl
from streamguard_core.models.adapters import GNNAdapter, adapter_for
from streamguard_core.models.registry import load_detector, load_labelled
from streamguard_core.training.collapse import CollapseError
from streamguard_core.training.job import read_run_status, run_job
from streamguard_core.training.loop import (
    TrainState,
    amp_settings,
    batches_per_epoch,
    class_weights,
    epoch_order,
    evaluate_best,
    fit,
    seed_everything,
    setup,
)

GNN = GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4)


@pytest.fixture(scope="module")
def data_dir(make_processed) -> Path:
    return make_processed(pairs=5, vocab_size=400, max_seq_len=96)


class _NaNModel(torch.nn.Module):
    """Graph-model signature; its loss is NaN from the first step (a diverged run)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x, node_token, edge_index, batch):
        n = int(batch.max()) + 1
        return self.w.expand(n, 2) * float("nan")


class _ConstantModel(_NaNModel):
    """Always predicts 'vulnerable', whatever the input (a collapsed run)."""

    def forward(self, x, node_token, edge_index, batch):
        n = int(batch.max()) + 1
        return self.w.expand(n, 2) * 0 + torch.tensor([0.0, 5.0])


def _state(data_dir: Path, run_dir: Path, cfg: TrainConfig, model=None) -> TrainState:
    """``setup`` on a fresh 2-layer hidden-8 GNN (or ``model``), seeded as a job seeds it."""
    seed_everything(cfg.seed)
    pad_id = 0
    if model is None:
        model, pad_id = adapter_for("gnn").build(GNN, data_dir)
    return setup("gnn", model, data_dir, run_dir, cfg, device="cpu", pad_id=pad_id)


def _job(data_dir: Path, run_dir: Path, model=GNN, **train) -> TrainJobSpec:
    cfg = {"epochs": 2, "batch_size": 8, "num_threads": 1, **train}
    return TrainJobSpec(model=model, train=TrainConfig(**cfg), seed=7, data_dir=str(data_dir),
                        run_dir=str(run_dir))  # fmt: skip


def test_fit_loss_falls_and_writes_resume_points(data_dir, tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1e-2, warmup_ratio=0.0, num_threads=1,
                      early_stopping_patience=10, checkpoint_every_steps=5)  # fmt: skip
    s = _state(data_dir, tmp_path, cfg)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    summary = fit(s)
    losses = [h["train_loss"] for h in s.history]
    assert len(losses) == 4 == summary["epochs_run"]
    assert losses[-1] < losses[0], losses
    assert s.global_step == 4 * batches_per_epoch(len(s.train), cfg)
    assert any(not torch.equal(before[k], v) for k, v in s.model.state_dict().items())
    assert 0 <= summary["best_epoch"] < 4 and 0 <= summary["best_f1"] <= 1
    for k in range(4):
        assert (s.paths.epoch(k) / "state.pt").exists()
    assert (s.paths.latest / "state.pt").exists() and (s.paths.best / "state.pt").exists()
    meta = json.loads(s.paths.metadata.read_text())
    assert meta["lr"] == 1e-2 and meta["global_step"] == s.global_step

    results = evaluate_best(s, data_dir)
    assert set(results) == {"valid", "test"}
    test_rows = list(read_jsonl(data_dir / "test" / "records.jsonl"))
    predictions = list(read_jsonl(s.paths.predictions))
    assert [p["id"] for p in predictions] == [r["id"] for r in test_rows]
    assert all(0 <= p["probability"] <= 1 for p in predictions)
    assert json.loads(s.paths.metrics.read_text()) == results


def test_nan_loss_collapses_and_never_steps(data_dir, tmp_path):
    model = _NaNModel()
    s = _state(data_dir, tmp_path, TrainConfig(epochs=2, batch_size=8, num_threads=1), model)
    with pytest.raises(CollapseError) as info:
        fit(s)
    assert info.value.event.reason == "non_finite_loss" and info.value.event.step == 3
    assert s.skipped_steps == 3  # non-finite gradients are never applied
    assert torch.equal(model.w.detach(), torch.zeros(2))


def test_constant_predictions_collapse_after_patience(data_dir, tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=16, early_stopping_patience=9, num_threads=1)
    s = _state(data_dir, tmp_path, cfg, _ConstantModel())
    with pytest.raises(CollapseError) as info:
        fit(s)
    assert info.value.event.reason == "constant_predictions"
    assert len(s.history) == 4  # epoch 0 is not judged; epochs 1-3 are the patience


def test_collapsed_job_writes_report_and_status(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(GNNAdapter, "build", lambda self, cfg, data_dir: (_NaNModel(), 0))
    out = tmp_path / "nan"
    status = run_job(_job(data_dir, out))
    assert status.status == "collapsed" and "non_finite_loss" in (status.error or "")
    report = json.loads((out / "collapse_report.json").read_text())
    assert report["reason"] == "non_finite_loss" and report["exit_code"] == 3
    assert report["kind"] == "gnn" and report["step"] == 3 and report["seed"] == 7
    assert read_run_status(out) == status
    assert not (out / "model").exists()


def test_gnn_job_writes_every_record(data_dir, tmp_path):
    out = tmp_path / "gnn"
    status = run_job(_job(data_dir, out))
    assert status.status == "completed" and status.kind == "gnn" and not status.resumed
    for name in ("exp_config.json", "run_status.json", "training_metadata.json", "training.log",
                 "metrics.json", "predictions.jsonl", "model/model_card.json",
                 "checkpoints/best/state.pt", "checkpoints/latest/state.pt",
                 "checkpoints/epoch_0/meta.json", "checkpoints/epoch_1/meta.json"):  # fmt: skip
        assert (out / name).exists(), name
    meta = json.loads((out / "training_metadata.json").read_text())
    assert len(meta["history"]) == 2 and meta["lr_source"] == "default"
    assert meta["lr"] == adapter_for("gnn").default_lr(GNN)[0]
    assert all(h["train_loss"] > 0 for h in meta["history"])
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["kind"] == "gnn" and 0 < card["threshold"] < 1
    assert card["config"] == GNN.model_dump(mode="json")
    spec = json.loads((out / "exp_config.json").read_text())
    assert spec["seed"] == spec["train"]["seed"] == 7 and spec["resumed"] is False
    state = torch.load(out / "checkpoints/latest/state.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "position"} <= set(state)
    assert "epoch 1" in (out / "training.log").read_text()


def test_helpers():
    assert (epoch_order(10, 1, 0) == epoch_order(10, 1, 0)).all()
    assert not (epoch_order(50, 1, 0) == epoch_order(50, 1, 1)).all()
    w = class_weights(torch.tensor([0, 0, 0, 1]).numpy(), 1.2)
    assert w.tolist() == pytest.approx([1.0, 3.6])
    assert amp_settings("auto", torch.device("cpu")) == (None, False)  # AMP off on CPU
    assert amp_settings("fp16", torch.device("cpu")) == (None, False)
    cfg = TrainConfig(batch_size=8, max_steps_per_epoch=3, accumulation_steps=2)
    assert batches_per_epoch(100, cfg) == 6 and batches_per_epoch(20, cfg) == math.ceil(20 / 8)


def test_lr_finder_then_cache_hit_and_auto_batch_size(data_dir, tmp_path):
    train = {"epochs": 1, "lr_finder": True, "lr_finder_steps": 30,
             "lr_cache_dir": str(tmp_path / "lr"), "auto_batch_size": True,
             "memory_budget_mb": 64}  # fmt: skip
    assert run_job(_job(data_dir, tmp_path / "a", **train)).status == "completed"
    first = json.loads((tmp_path / "a" / "training_metadata.json").read_text())
    assert first["lr_source"] in ("finder", "fallback") and first["lr_finder"]["reason"]
    assert first["lr_finder"]["lrs"]  # a curve was measured
    assert first["auto_batch_size"]["memory_budget_mb"] == 64
    assert first["batch_size"] == first["auto_batch_size"]["chosen"] >= 1
    assert run_job(_job(data_dir, tmp_path / "b", **train)).status == "completed"
    second = json.loads((tmp_path / "b" / "training_metadata.json").read_text())
    assert second["lr_source"] == "cache" and second["lr"] == first["lr"]


@pytest.mark.parametrize(
    "model", [GNN, TransformerConfig(hidden_size=16, num_layers=2)], ids=["gnn", "transformer"]
)
def test_saved_model_scores_a_raw_file_as_training_did(model, data_dir, tmp_path):
    """The saved detector preprocesses raw text with its own settings: same scores as training."""
    out = tmp_path / model.kind
    assert run_job(_job(data_dir, out, model=model, epochs=1)).status == "completed"
    raw = tmp_path / "test.jsonl"
    write_jsonl(raw, ({"func": r["func"], "target": r["label"]}
                      for r in read_jsonl(data_dir / "test" / "records.jsonl")))  # fmt: skip
    detector = load_detector(out / "model")
    records, rejects = load_labelled(raw)
    assert not rejects
    probs = detector.predict_proba([r.func for r in records])
    trained = {p["id"]: p["probability"] for p in read_jsonl(out / "predictions.jsonl")}
    test_ids = [r["id"] for r in read_jsonl(data_dir / "test" / "records.jsonl")]
    assert probs.tolist() == pytest.approx([trained[i] for i in test_ids], abs=1e-5)
    assert (
        detector.threshold == json.loads((out / "model/model_card.json").read_text())["threshold"]
    )
