"""Per-record weights end to end: raw ``weight`` field -> preprocessing -> ``train.use_weights``.

Two processed data sets hold the same synthetic functions, split alike: one with non-uniform
``weight`` fields in the raw input, one with every weight 1.0. The same job spec (a 2-layer,
hidden-8 GNN, a few steps) trains differently with ``use_weights`` on and off on the first, and
bit-identically on the second. The baseline honours ``use_weights`` too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streamguard_core.config import (
    BaselineConfig,
    DataConfig,
    GNNConfig,
    PreprocessConfig,
    TrainConfig,
    TrainJobSpec,
)
from streamguard_core.data.synthetic import generate_synthetic
from streamguard_core.io import read_jsonl, write_jsonl
from streamguard_core.preprocess.run import preprocess
from streamguard_core.training.run import train_job

SPLITS = ("train", "valid", "test")


def _weight(i: int) -> float:
    """A deterministic, strongly non-uniform weight for raw record ``i``."""
    return (0.2, 1.0, 3.0, 0.5, 2.0)[i % 5]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """{"weighted": ..., "uniform": ...}: one raw JSONL (with / without weights), preprocessed."""
    tmp = tmp_path_factory.mktemp("weights")
    records = generate_synthetic(pairs_per_cwe=3, seed=11)
    out: dict[str, Path] = {}
    for name, weigh in (("weighted", True), ("uniform", False)):
        raw = tmp / f"{name}.jsonl"
        write_jsonl(
            raw,
            (
                {"func": r.func, "target": r.label, "group": r.group,
                 **({"weight": _weight(i)} if weigh else {})}
                for i, r in enumerate(records)
            ),
        )  # fmt: skip
        out[name] = tmp / name
        preprocess(
            DataConfig(inputs=[str(raw)], split_strategy="group", seed=3),
            PreprocessConfig(workers=1, vocab_size=300, max_seq_len=64),
            out[name],
            show_progress=False,
        )
    return out


def _spec(data_dir: Path, run_dir: Path, use_weights: bool, model=None) -> TrainJobSpec:
    return TrainJobSpec(
        model=model or GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4),
        train=TrainConfig(
            epochs=2,
            batch_size=8,
            max_steps_per_epoch=3,
            num_threads=1,
            use_weights=use_weights,
            checkpoint_every_steps=1000,
            lr=5e-3,
        ),
        seed=5,
        data_dir=str(data_dir),
        run_dir=str(run_dir),
    )


def _trained(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[float], dict]:
    state = torch.load(run_dir / "checkpoints" / "latest" / "state.pt", weights_only=True)
    history = json.loads((run_dir / "training_metadata.json").read_text())["history"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return state["model"], [h["train_loss"] for h in history], metrics


def test_weights_reach_the_processed_data_set(datasets):
    """The raw weight field is kept through preprocessing; the two data sets differ only there."""
    for split in SPLITS:
        weighted = list(read_jsonl(datasets["weighted"] / split / "records.jsonl"))
        uniform = list(read_jsonl(datasets["uniform"] / split / "records.jsonl"))
        assert [r["func"] for r in weighted] == [r["func"] for r in uniform]
        assert all(r["weight"] == 1.0 for r in uniform)
    train = list(read_jsonl(datasets["weighted"] / "train" / "records.jsonl"))
    assert {r["weight"] for r in train} == {0.2, 1.0, 3.0, 0.5, 2.0}
    meta = json.loads((datasets["weighted"] / "preprocessing_metadata.json").read_text())
    assert meta["counts"]["weighted_per_split"]["train"] == sum(
        1 for r in train if r["weight"] != 1.0
    )


def test_use_weights_changes_gnn_training(datasets, tmp_path):
    runs = {}
    for use in (False, True):
        train_job(_spec(datasets["weighted"], tmp_path / f"w_{use}", use_weights=use))
        runs[use] = _trained(tmp_path / f"w_{use}")
    (w_off, loss_off, _), (w_on, loss_on, _) = runs[False], runs[True]
    assert w_off.keys() == w_on.keys()
    assert any(not torch.equal(w_off[k], w_on[k]) for k in w_off)
    assert loss_off != loss_on
    saved = json.loads((tmp_path / "w_True" / "exp_config.json").read_text())
    assert saved["train"]["use_weights"] is True


def test_use_weights_with_unit_weights_is_bit_identical(datasets, tmp_path):
    runs = {}
    for use in (False, True):
        train_job(_spec(datasets["uniform"], tmp_path / f"u_{use}", use_weights=use))
        runs[use] = _trained(tmp_path / f"u_{use}")
    (w_off, loss_off, m_off), (w_on, loss_on, m_on) = runs[False], runs[True]
    assert w_off.keys() == w_on.keys()
    for k in w_off:
        assert torch.equal(w_off[k], w_on[k]), k
    assert loss_off == loss_on and m_off == m_on


def test_baseline_honours_use_weights(datasets, tmp_path):
    def probabilities(data: str, use: bool) -> list[float]:
        run = tmp_path / f"{data}_{use}"
        train_job(_spec(datasets[data], run, use, model=BaselineConfig(min_df=1)))
        return [row["probability"] for row in read_jsonl(run / "predictions.jsonl")]

    assert probabilities("weighted", True) != probabilities("weighted", False)
    assert probabilities("uniform", True) == probabilities("uniform", False)
