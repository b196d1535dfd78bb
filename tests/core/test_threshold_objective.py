"""Thresholds per objective: tuning for F1, accuracy or a target precision, accuracy at 0.5 beside
the tuned one, and the objective carried from a real training run to the aggregate and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.config import GNNConfig, SuccessCriteria, TrainConfig, TrainJobSpec
from streamguard_core.config import TrainingPlan as Plan
from streamguard_core.evaluation.metrics import (
    classification_metrics,
    tune_threshold,
)
from streamguard_core.io import read_jsonl
from streamguard_core.models.baseline import BaselineDetector
from streamguard_core.pipeline.aggregate import METRICS, TRIVIAL_REFERENCE, aggregate_all
from streamguard_core.pipeline.report import write_report
from streamguard_core.training.job import run_job

# 7 safe, 3 vulnerable; two vulnerable ones rank low, so F1 is best with a low cut (catch all
# three) while accuracy is best with a high one
Y = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
P = [0.05, 0.10, 0.20, 0.40, 0.45, 0.50, 0.60, 0.30, 0.35, 0.90]


def _cuts(p: list[float]) -> list[float]:
    """Every distinct decision threshold, and one above them all (nothing vulnerable)."""
    return [*sorted(set(p)), max(p) + 1.0]


def _at(y: list[int], p: list[float], cut: float) -> dict:
    return classification_metrics(y, p, cut)


def test_accuracy_objective_maximises_accuracy_and_beats_the_majority():
    f1_choice = tune_threshold(Y, P, "f1")
    acc_choice = tune_threshold(Y, P, "accuracy")
    best_accuracy = max(_at(Y, P, c)["accuracy"] for c in _cuts(P))
    accuracy = _at(Y, P, acc_choice.threshold)["accuracy"]
    assert accuracy == pytest.approx(best_accuracy) == pytest.approx(0.8)  # cut 0.9: 1 tp, 0 fp
    assert acc_choice.threshold == pytest.approx(0.9)
    assert acc_choice.score == pytest.approx(accuracy) and acc_choice.note is None
    # the F1 cut (0.3: all three vulnerable, four false alarms, F1 0.6) falls below the
    # majority class (0.7)
    assert f1_choice.threshold == pytest.approx(0.3) and f1_choice.score == pytest.approx(0.6)
    assert _at(Y, P, f1_choice.threshold)["accuracy"] == pytest.approx(0.6)
    assert accuracy >= 0.7  # the majority-class accuracy


def test_accuracy_objective_may_predict_nothing_vulnerable():
    # a ranking this poor is best served by "always safe": the majority accuracy, exactly
    y, p = [1, 0, 0, 0, 0], [0.1, 0.9, 0.8, 0.7, 0.6]
    choice = tune_threshold(y, p, "accuracy")
    assert choice.threshold > max(p) and choice.score == pytest.approx(0.8)
    assert _at(y, p, choice.threshold)["predicted_positive_rate"] == 0.0
    assert json.dumps(choice.threshold)  # a finite number, not infinity


def test_precision_objective_takes_the_lowest_cut_reaching_the_target():
    # precision by cut: 0.9 -> 1, 0.6 -> 1/2, 0.5 -> 1/3, ... 0.35 -> 1/3, 0.3 -> 3/7, 0.2 -> 3/8:
    # it falls below 0.4 and comes back, so the lowest cut reaching 0.4 is 0.3, not 0.6
    choice = tune_threshold(Y, P, "precision", target_precision=0.4)
    reaching = [c for c in _cuts(P)[:-1] if _at(Y, P, c)["precision"] >= 0.4]
    assert choice.threshold == pytest.approx(min(reaching)) == pytest.approx(0.3)
    at_cut = _at(Y, P, choice.threshold)
    assert at_cut["precision"] == pytest.approx(3 / 7) and at_cut["recall"] == pytest.approx(1.0)
    assert choice.score == pytest.approx(at_cut["recall"])
    assert (choice.target_precision, choice.target_reached, choice.note) == (0.4, True, None)
    assert tune_threshold(Y, P, "precision", 0.6).threshold == pytest.approx(0.9)


def test_an_unreachable_target_precision_is_reported():
    y, p = [0, 1, 0, 1], [0.9, 0.8, 0.3, 0.2]  # the top item is safe: precision <= 2/3
    choice = tune_threshold(y, p, "precision", target_precision=0.9)
    assert choice.target_reached is False
    # precision peaks at 1/2, at cuts 0.8 and 0.2: the lower one keeps more recall
    assert choice.threshold == pytest.approx(0.2)
    assert choice.score == pytest.approx(0.5 - 1)  # below any model that reaches the target
    assert "no threshold reaches precision 0.9" in choice.note
    metrics = classification_metrics(y, p, choice)
    assert metrics["threshold_objective"] == "precision" and metrics["threshold"] == 0.2
    assert metrics["target_precision_reached"] is False
    assert metrics["threshold_note"] == choice.note


def test_defaults_come_from_the_train_config_and_one_class_is_not_tuned():
    assert tune_threshold(Y, P) == tune_threshold(Y, P, TrainConfig().threshold_objective)
    default_target = tune_threshold(Y, P, "precision").target_precision
    assert default_target == TrainConfig().target_precision
    one_class = tune_threshold([1, 1], [0.2, 0.9], "accuracy")
    assert one_class.threshold == 0.5 and "one class" in one_class.note
    with pytest.raises(ValueError, match="equal"):
        tune_threshold([0, 1], [0.5], "f1")


def test_metrics_report_accuracy_at_half_beside_the_tuned_accuracy():
    m = classification_metrics(Y, P, 0.65)
    # at 0.65: 0.90 vulnerable -> 1 tp, 0 fp -> accuracy 8/10
    # at 0.5: 0.50, 0.60, 0.90 vulnerable -> 1 tp, 2 fp -> accuracy 6/10
    assert m["accuracy"] == pytest.approx(0.8) and m["accuracy_at_half"] == pytest.approx(0.6)
    assert "threshold_objective" not in m  # a bare threshold says nothing of its tuning


def test_baseline_tunes_for_the_objective(make_processed):
    from streamguard_core.preprocess.dataset import ProcessedDataset

    data = ProcessedDataset(make_processed(pairs=5, vocab_size=400, max_seq_len=96))
    train, valid = data.split("train"), data.split("valid")
    funcs = [r["func"] for r in train.records], [r["func"] for r in valid.records]
    by_objective = {}
    for objective in ("f1", "accuracy"):
        detector = BaselineDetector()
        by_objective[objective] = detector.fit(
            funcs[0], train.labels, funcs[1], valid.labels, threshold_objective=objective
        )
        assert by_objective[objective]["threshold"] == detector.threshold
    rate = float(np.mean(valid.labels))
    assert by_objective["accuracy"]["threshold_objective"] == "accuracy"
    assert by_objective["accuracy"]["accuracy"] >= max(rate, 1 - rate)
    assert by_objective["accuracy"]["accuracy"] >= by_objective["f1"]["accuracy"]


@pytest.fixture(scope="module")
def accuracy_run(make_processed, tmp_path_factory) -> tuple[Path, Path]:
    """One 3-epoch run of a 2-layer hidden-8 GNN tuned for accuracy: (output root, run dir)."""
    data_dir = make_processed(pairs=5, vocab_size=400, max_seq_len=96)
    root = tmp_path_factory.mktemp("accuracy_run")
    train = TrainConfig(epochs=3, batch_size=8, num_threads=1, lr=1e-2,
                        early_stopping_patience=10, threshold_objective="accuracy")  # fmt: skip
    spec = TrainJobSpec(
        model=GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4),
        train=train,
        seed=7,
        data_dir=str(data_dir),
        run_dir=str(root / "gnn" / "seed_7"),
    )
    assert run_job(spec).status == "completed"
    return root, Path(spec.run_dir)


def test_a_run_records_its_objective_and_selects_on_it(accuracy_run):
    _, run_dir = accuracy_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    meta = json.loads((run_dir / "training_metadata.json").read_text())
    valid = metrics["valid"]
    assert valid["threshold_objective"] == "accuracy" == metrics["test"]["threshold_objective"]
    assert 0 <= valid["accuracy_at_half"] <= 1 and "accuracy_at_half" in metrics["test"]
    rate = valid["positives"] / valid["n"]
    assert valid["accuracy"] >= max(rate, 1 - rate)  # tuned on valid: never below the majority
    # the best epoch is the one with the best valid accuracy at its own threshold
    accuracies = [h["valid_accuracy"] for h in meta["history"]]
    assert meta["selection_metric"] == "accuracy" and meta["threshold_objective"] == "accuracy"
    assert meta["best_epoch"] == int(np.argmax(accuracies))
    assert valid["accuracy"] == pytest.approx(max(accuracies))
    assert valid["threshold"] == meta["threshold"] == meta["threshold_tuning"]["threshold"]
    predictions = list(read_jsonl(run_dir / "predictions.jsonl"))
    assert all(p["prediction"] == int(p["probability"] >= valid["threshold"]) for p in predictions)


def test_the_aggregate_and_report_carry_accuracy_at_half_and_references(accuracy_run):
    root, run_dir = accuracy_run
    plan = Plan(models=[GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4)], seeds=[7])
    summary = aggregate_all(root, plan, SuccessCriteria(), split="valid")
    gnn = summary["models"]["gnn"]
    valid = json.loads((run_dir / "metrics.json").read_text())["valid"]
    assert set(gnn["metrics"]) == set(METRICS) == set(TRIVIAL_REFERENCE)
    assert gnn["metrics"]["accuracy_at_half"]["mean"] == pytest.approx(valid["accuracy_at_half"])
    assert gnn["threshold_objective"] == "accuracy" and gnn["threshold_notes"] == []
    rate = valid["positives"] / valid["n"]
    refs = {name: stats["trivial"] for name, stats in gnn["metrics"].items()}
    assert refs["accuracy"] == refs["accuracy_at_half"] == pytest.approx(max(rate, 1 - rate))
    assert refs["f1"] == pytest.approx(2 * rate / (1 + rate))
    assert (refs["roc_auc"], refs["mcc"], refs["recall"]) == (0.5, 0.0, None)
    text = write_report(summary, root).read_text()
    assert "Decision threshold tuned on valid for: accuracy." in text
    assert f"| accuracy_at_half | {valid['accuracy_at_half']:.3f} | n/a | n/a | 1 |" in text
