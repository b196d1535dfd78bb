"""The training loop's safety paths: injected NaN loss, constant predictions, records written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streamguard_core.cli import main
from streamguard_core.training import run as train_run
from streamguard_core.training.collapse import COLLAPSE_EXIT_CODE
from streamguard_core.training.loop import TrainConfig, amp_settings, class_weights, epoch_order


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


def _use_model(monkeypatch, model: torch.nn.Module) -> None:
    monkeypatch.setattr(train_run, "build_model", lambda kind, cfg, data_dir: (model, 0))


def test_injected_nan_loss_stops_with_collapse_report(data_dir, tmp_path, monkeypatch, capsys):
    _use_model(monkeypatch, _NaNModel())
    out = tmp_path / "nan"
    code = main(["train", "gnn", "--data", str(data_dir), "--output-dir", str(out),
                 "--epochs", "2", "--batch-size", "8", "--num-threads", "1"])  # fmt: skip
    assert code == COLLAPSE_EXIT_CODE == 3
    report = json.loads((out / "collapse_report.json").read_text())
    assert report["reason"] == "non_finite_loss" and report["exit_code"] == 3
    assert report["kind"] == "gnn" and report["step"] == 3  # patience 3
    assert "collapse_report.json" in capsys.readouterr().err
    assert not (out / "model").exists()


def test_constant_predictions_collapse(data_dir, tmp_path, monkeypatch):
    _use_model(monkeypatch, _ConstantModel())
    out = tmp_path / "const"
    code = main(["train", "gnn", "--data", str(data_dir), "--output-dir", str(out),
                 "--epochs", "6", "--batch-size", "16", "--early-stopping-patience", "9",
                 "--num-threads", "1"])  # fmt: skip
    assert code == COLLAPSE_EXIT_CODE
    report = json.loads((out / "collapse_report.json").read_text())
    assert report["reason"] == "constant_predictions"
    history = json.loads((out / "training_metadata.json").read_text())["history"]
    assert len(history) == 4  # epoch 0 is not judged; epochs 1-3 are the patience


def test_gnn_run_writes_every_record(data_dir, tmp_path):
    out = tmp_path / "gnn"
    code = main(["train", "gnn", "--data", str(data_dir), "--output-dir", str(out),
                 "--epochs", "2", "--batch-size", "8", "--hidden-dim", "16", "--num-layers",
                 "2", "--num-threads", "1"])  # fmt: skip
    assert code == 0
    for name in ("exp_config.json", "training_metadata.json", "training.log", "metrics.json",
                 "predictions.jsonl", "model/model_card.json", "checkpoints/best/state.pt",
                 "checkpoints/latest/state.pt", "checkpoints/epoch_0/meta.json",
                 "checkpoints/epoch_1/meta.json"):  # fmt: skip
        assert (out / name).exists(), name
    meta = json.loads((out / "training_metadata.json").read_text())
    assert len(meta["history"]) == 2 and meta["lr_source"] == "default" and meta["lr"] == 5e-4
    assert all(h["train_loss"] > 0 for h in meta["history"])
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["kind"] == "gnn" and 0 < card["threshold"] < 1
    state = torch.load(out / "checkpoints/latest/state.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "position"} <= set(state)
    assert "epoch 1" in (out / "training.log").read_text()


def test_helpers():
    assert (epoch_order(10, 1, 0) == epoch_order(10, 1, 0)).all()
    assert not (epoch_order(50, 1, 0) == epoch_order(50, 1, 1)).all()
    w = class_weights(torch.tensor([0, 0, 0, 1]).numpy(), 1.2)
    assert w.tolist() == pytest.approx([1.0, 3.6])
    assert amp_settings("auto", torch.device("cpu")) == (None, False)  # AMP off on CPU
    assert TrainConfig().mixed_precision == "auto"


def test_lr_finder_then_cache_hit_and_auto_batch_size(data_dir, tmp_path):
    args = ["train", "gnn", "--data", str(data_dir), "--epochs", "1", "--hidden-dim", "16",
            "--num-layers", "2", "--num-threads", "1", "--lr-finder", "--lr-finder-steps", "30",
            "--lr-cache-dir", str(tmp_path / "lr"), "--auto-batch-size",
            "--memory-budget-mb", "64"]  # fmt: skip
    assert main([*args, "--output-dir", str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "training_metadata.json").read_text())
    assert first["lr_source"] in ("finder", "fallback") and first["lr_finder"]["reason"]
    assert first["lr_finder"]["lrs"]  # a curve was measured
    assert first["auto_batch_size"]["memory_budget_mb"] == 64
    assert first["batch_size"] == first["auto_batch_size"]["chosen"] >= 1
    assert main([*args, "--output-dir", str(tmp_path / "b")]) == 0
    second = json.loads((tmp_path / "b" / "training_metadata.json").read_text())
    assert second["lr_source"] == "cache" and second["lr"] == first["lr"]


@pytest.mark.parametrize("kind", ["gnn", "transformer"])
def test_evaluate_raw_file_matches_training_metrics(kind, data_dir, tmp_path):
    """evaluate preprocesses raw text with the model's own settings: same scores as training."""
    from streamguard_core.io import read_jsonl, write_jsonl

    out = tmp_path / kind
    assert main(["train", kind, "--data", str(data_dir), "--output-dir", str(out), "--epochs",
                 "1", "--hidden-dim", "16", "--num-layers", "2", "--num-threads", "1",
                 *(["--max-seq-len", "96"] if kind == "transformer" else [])]) == 0  # fmt: skip
    raw = tmp_path / "test.jsonl"
    write_jsonl(raw, ({"func": r["func"], "target": r["label"]}
                      for r in read_jsonl(data_dir / "test" / "records.jsonl")))  # fmt: skip
    assert main(["evaluate", "--model-dir", str(out / "model"), "--data", str(raw),
                 "--output", str(tmp_path / "eval.json")]) == 0  # fmt: skip
    trained = json.loads((out / "metrics.json").read_text())["test"]
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["n"] == trained["n"]
    assert evaluated["roc_auc"] == pytest.approx(trained["roc_auc"], abs=1e-6)
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
