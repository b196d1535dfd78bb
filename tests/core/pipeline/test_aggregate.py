"""Aggregation of a production run's seed directories: statistics, trivial references, verdict."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from streamguard_core.config import SuccessCriteria, TrainingPlan
from streamguard_core.pipeline.aggregate import (
    METRICS,
    aggregate_all,
    aggregate_model,
    failed_check_lines,
    summarize_values,
)


def _confusion(vulnerable: int, n_items: int) -> list[list[int]]:
    """A plausible ``[[tn, fp], [fn, tp]]`` with ``vulnerable`` of ``n_items`` truly vulnerable."""
    tp = (7 * vulnerable) // 10
    fp = (n_items - vulnerable) // 5
    return [[n_items - vulnerable - fp, fp], [vulnerable - tp, tp]]


def _metrics(
    f1: float,
    accuracy: float = 0.8,
    roc_auc: float | None = 0.85,
    vulnerable: int = 40,
    n_items: int = 100,
) -> dict:
    return {
        "n": n_items,
        "positives": vulnerable,
        "threshold": 0.45,
        "accuracy": accuracy,
        "precision": f1 - 0.02,
        "recall": f1 + 0.02,
        "f1": f1,
        "macro_f1": f1 + 0.05,
        "roc_auc": roc_auc,
        "pr_auc": None if roc_auc is None else roc_auc - 0.1,
        "mcc": f1 - 0.3,
        "confusion_matrix": _confusion(vulnerable, n_items),
        "predicted_positive_rate": 0.38,
    }


def write_seed(
    root: Path,
    model: str,
    seed: int,
    status: str = "completed",
    *,
    f1: float = 0.7,
    accuracy: float = 0.8,
    splits: tuple[str, ...] = ("valid", "test"),
    vulnerable: dict[str, int] | int = 40,
    n_items: int = 100,
    predictions: bool = True,
    error: str | None = None,
    cost_usd: float | None = None,
    epochs: int = 3,
    collapse: dict | None = None,
) -> Path:
    """A seed directory as a real production run leaves it (the on-disk contract).

    ``vulnerable`` is the number of truly vulnerable items of each split (one number: every
    split); ``predictions.jsonl`` holds the test split when there is one, else valid, as a run
    writes it.
    """
    seed_dir = root / model / f"seed_{seed}"
    seed_dir.mkdir(parents=True)
    cost = None
    if cost_usd is not None:
        cost = {
            "instance_type": "ml.g5.xlarge",
            "training_time_s": 600.0,
            "billable_time_s": 200.0,
            "spot_savings_pct": 66.7,
            "cost_usd": cost_usd,
        }
    run_status = {
        "model": model,
        "kind": model,
        "seed": seed,
        "status": status,
        "error": error,
        "wall_s": 12.5,
        "backend": "local",
        "device": "cpu",
        "run_dir": str(seed_dir),
        "cost": cost,
    }
    (seed_dir / "run_status.json").write_text(json.dumps(run_status))
    history = [
        {
            "epoch": e,
            "train_loss": 0.7 - 0.1 * e,
            "valid_f1": f1 - 0.05 * (epochs - 1 - e),
            "valid_roc_auc": 0.8,
            "valid_accuracy": 0.75,
            "threshold": 0.5,
            "lr": 1e-3,
            "seconds": 2.0,
            "global_step": 10 * (e + 1),
        }
        for e in range(epochs if model != "baseline" else 0)
    ]
    metadata = {"history": history, "best_epoch": epochs - 1} if history else {"history": []}
    (seed_dir / "training_metadata.json").write_text(json.dumps(metadata))
    if status == "completed":
        per_split = (
            vulnerable if isinstance(vulnerable, dict) else dict.fromkeys(splits, vulnerable)
        )
        metrics = {
            split: _metrics(f1, accuracy, vulnerable=per_split[split], n_items=n_items)
            for split in splits
        }
        (seed_dir / "metrics.json").write_text(json.dumps(metrics))
        if predictions:
            scored = "test" if "test" in splits else "valid"
            with open(seed_dir / "predictions.jsonl", "w") as fh:
                for i in range(n_items):
                    label = int(i < per_split[scored])
                    row = {"id": f"{scored}:{i}", "label": label, "probability": 0.5}
                    fh.write(json.dumps({**row, "prediction": 1}) + "\n")
        (seed_dir / "model").mkdir()
    if status == "collapsed":
        report = collapse or {
            "reason": "constant_predictions",
            "detail": "every prediction is class 0 for 200 steps",
            "epoch": 1,
            "step": 57,
        }
        report = {**report, "history": {}, "kind": model, "seed": seed, "exit_code": 3}
        (seed_dir / "collapse_report.json").write_text(json.dumps(report))
    return seed_dir


def plan(*models: str | dict, seeds: tuple[int, ...] = (1, 2, 3)) -> TrainingPlan:
    """A plan of these models (a kind name, or a model config mapping) and seeds."""
    return TrainingPlan(models=list(models), seeds=list(seeds))


def _checks(summary: dict) -> dict[str, dict]:
    return {check["name"]: check for check in summary["success"]["checks"]}


# ------------------------------------------------------------------ summarize_values


def test_summarize_values_matches_numpy_and_scipy():
    values = [0.61, 0.7, 0.66, 0.72]
    s = summarize_values([*values, None, float("nan")])
    mean, std = np.mean(values), np.std(values, ddof=1)
    half = stats.t.ppf(0.975, df=3) * std / math.sqrt(4)
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(mean)
    assert s["std"] == pytest.approx(std)
    assert s["ci95_low"] == pytest.approx(mean - half)
    assert s["ci95_high"] == pytest.approx(mean + half)
    # scipy's own interval agrees
    low, high = stats.t.interval(0.95, df=3, loc=mean, scale=stats.sem(values))
    assert (s["ci95_low"], s["ci95_high"]) == (pytest.approx(low), pytest.approx(high))


def test_summarize_values_one_and_no_values():
    # one value has no spread: std and CI are n/a (None), not a zero-width interval
    assert summarize_values([0.5, None]) == {
        "mean": 0.5,
        "std": None,
        "ci95_low": None,
        "ci95_high": None,
        "n": 1,
    }
    empty = summarize_values([None, None])
    assert empty == {"mean": None, "std": None, "ci95_low": None, "ci95_high": None, "n": 0}
    assert summarize_values([])["n"] == 0


# ------------------------------------------------------------------ aggregate_model


def test_aggregate_model_statistics_rows_cost_and_file(tmp_path):
    f1s = [0.70, 0.76, 0.73]
    for seed, f1 in zip((42, 43, 44), f1s, strict=True):
        write_seed(tmp_path, "transformer", seed, f1=f1, cost_usd=0.25, epochs=4)
    (tmp_path / "transformer" / "not_a_seed").mkdir()  # ignored: not seed_<n>

    summary = aggregate_model(tmp_path, "transformer")

    assert (summary["n_seeds"], summary["n_completed"]) == (3, 3)
    assert summary["n_collapsed"] == summary["n_failed"] == 0
    assert summary["metrics"]["f1"]["mean"] == pytest.approx(np.mean(f1s))
    assert summary["metrics"]["f1"]["std"] == pytest.approx(np.std(f1s, ddof=1))
    assert summary["metrics"]["mcc"]["mean"] == pytest.approx(np.mean(f1s) - 0.3)
    assert set(summary["metrics"]) == set(METRICS)
    assert [row["seed"] for row in summary["seeds"]] == [42, 43, 44]
    row = summary["seeds"][1]
    assert row["status"] == "completed" and row["split"] == "test"
    assert row["f1"] == pytest.approx(0.76) and row["threshold"] == pytest.approx(0.45)
    assert (row["best_epoch"], row["epochs_run"], row["wall_s"]) == (3, 4, 12.5)
    assert row["error"] is None and row["cost"]["instance_type"] == "ml.g5.xlarge"
    assert summary["cost"] == {
        "total_usd": pytest.approx(0.75),
        "training_time_s": pytest.approx(1800.0),
        "billable_time_s": pytest.approx(600.0),
    }
    on_disk = json.loads((tmp_path / "transformer" / "production_summary.json").read_text())
    assert on_disk["metrics"]["f1"]["mean"] == pytest.approx(np.mean(f1s))
    assert on_disk["collapse_events"] == []


def test_collapsed_and_failed_seeds_are_counted_with_reasons(tmp_path):
    write_seed(tmp_path, "gnn", 1, f1=0.6)
    write_seed(tmp_path, "gnn", 2, "collapsed", error="collapse: constant predictions")
    write_seed(tmp_path, "gnn", 3, "failed", error="RuntimeError: CUDA out of memory")

    summary = aggregate_model(tmp_path, "gnn")

    assert (summary["n_completed"], summary["n_collapsed"], summary["n_failed"]) == (1, 1, 1)
    assert summary["collapse_events"] == [
        {
            "seed": 2,
            "reason": "constant_predictions",
            "detail": "every prediction is class 0 for 200 steps",
            "epoch": 1,
            "step": 57,
        }
    ]
    failed = summary["seeds"][2]
    assert failed["status"] == "failed" and "CUDA out of memory" in failed["error"]
    assert failed["f1"] is None and failed["split"] is None
    # statistics only over the completed seed (one: no spread), beside the all-vulnerable F1
    assert summary["metrics"]["f1"] == {
        "mean": 0.6,
        "std": None,
        "ci95_low": None,
        "ci95_high": None,
        "n": 1,
        "trivial": pytest.approx(2 * 0.4 / 1.4),
    }
    assert summary["cost"] is None


def test_missing_seed_dirs_and_files_count_as_failed(tmp_path):
    write_seed(tmp_path, "baseline", 1, f1=0.55, splits=("valid",))  # no test split
    (tmp_path / "baseline" / "seed_2").mkdir()  # never started
    write_seed(tmp_path, "baseline", 4, f1=0.9)
    (tmp_path / "baseline" / "seed_4" / "metrics.json").unlink()  # "completed" without metrics
    write_seed(tmp_path, "baseline", 5, "collapsed")
    (tmp_path / "baseline" / "seed_5" / "collapse_report.json").unlink()
    bad = write_seed(tmp_path, "baseline", 6)
    (bad / "run_status.json").write_text("{not json")

    summary = aggregate_model(tmp_path, "baseline", seeds=[1, 2, 3, 4, 5, 6])
    rows = {row["seed"]: row for row in summary["seeds"]}

    assert rows[1]["status"] == "completed" and rows[1]["split"] == "valid"
    assert rows[1]["f1"] == pytest.approx(0.55) and rows[1]["epochs_run"] == 0
    assert rows[2]["status"] == "failed" and rows[2]["error"] == "no run_status.json"
    assert rows[3]["status"] == "failed" and rows[3]["error"] == "no run_status.json"
    assert rows[4]["status"] == "failed" and "metrics.json" in rows[4]["error"]
    assert rows[5]["status"] == "collapsed"
    assert summary["collapse_events"][0]["reason"] == "unknown"
    assert rows[6]["status"] == "failed" and "unreadable run_status.json" in rows[6]["error"]
    assert (summary["n_seeds"], summary["n_completed"]) == (6, 1)
    assert (summary["n_collapsed"], summary["n_failed"]) == (1, 4)


def test_model_without_any_run(tmp_path):
    summary = aggregate_model(tmp_path, "gnn")
    assert summary["n_seeds"] == 0 and summary["seeds"] == []
    assert summary["metrics"]["f1"]["mean"] is None
    assert (tmp_path / "gnn" / "production_summary.json").exists()


# ------------------------------------------------------------------ trivial references


def test_trivial_references_equal_hand_computed_values(tmp_path):
    # 27 of 61 test functions vulnerable: p = 27/61
    for seed in (1, 2):
        write_seed(tmp_path, "transformer", seed, vulnerable=27, n_items=61)
    summary = aggregate_all(tmp_path, plan("transformer", seeds=(1, 2)), SuccessCriteria())
    trivial = summary["models"]["transformer"]["trivial"]

    labels = [1] * 27 + [0] * 34
    assert trivial["all_vulnerable_f1"] == pytest.approx(2 * 27 / (61 + 27))
    assert trivial["all_vulnerable_f1"] == pytest.approx(f1_score(labels, [1] * 61))
    assert trivial["majority_accuracy"] == pytest.approx(34 / 61)
    assert trivial["majority_accuracy"] == pytest.approx(accuracy_score(labels, [0] * 61))
    assert trivial["vulnerable_rate"] == pytest.approx(27 / 61)
    assert (trivial["split"], trivial["n_items"]) == ("test", 61)
    assert trivial["labels_from"] == "predictions.jsonl"
    assert trivial["same_items"] is True and trivial["note"] is None
    assert summary["models"]["transformer"]["kind"] == "transformer"


def test_trivial_references_from_the_confusion_matrix_of_the_split_used(tmp_path):
    # Devign-like: no test split, no predictions file: the valid confusion matrix gives p
    write_seed(tmp_path, "gnn", 1, splits=("valid",), vulnerable=60, predictions=False)
    summary = aggregate_all(tmp_path, plan("gnn", seeds=(1,)), SuccessCriteria())
    trivial = summary["models"]["gnn"]["trivial"]
    assert trivial["split"] == "valid" and trivial["labels_from"] == "confusion_matrix"
    assert trivial["all_vulnerable_f1"] == pytest.approx(0.75)
    assert trivial["majority_accuracy"] == pytest.approx(0.6)


def test_trivial_references_when_valid_is_asked_but_predictions_hold_test(tmp_path):
    # predictions.jsonl holds test (60% vulnerable); valid (30%) must come from its matrix
    write_seed(tmp_path, "gnn", 1, vulnerable={"valid": 30, "test": 60})
    summary = aggregate_all(tmp_path, plan("gnn", seeds=(1,)), SuccessCriteria(), split="valid")
    trivial = summary["models"]["gnn"]["trivial"]
    assert trivial["split"] == "valid" and trivial["labels_from"] == "confusion_matrix"
    assert trivial["vulnerable_rate"] == pytest.approx(0.3)
    assert trivial["majority_accuracy"] == pytest.approx(0.7)


def test_seeds_scored_on_different_items_are_reported(tmp_path):
    write_seed(tmp_path, "transformer", 1, vulnerable=40)
    write_seed(tmp_path, "transformer", 2, vulnerable=60)
    summary = aggregate_all(tmp_path, plan("transformer", seeds=(1, 2)), SuccessCriteria())
    trivial = summary["models"]["transformer"]["trivial"]
    assert trivial["same_items"] is False and trivial["n_items"] is None
    assert "different items" in trivial["note"]
    assert "seed 1: 40/100" in trivial["note"] and "seed 2: 60/100" in trivial["note"]
    # each seed's references, averaged as its metrics are
    assert trivial["all_vulnerable_f1"] == pytest.approx((0.8 / 1.4 + 1.2 / 1.6) / 2)
    assert trivial["majority_accuracy"] == pytest.approx(0.6)


# ------------------------------------------------------------------ aggregate_all


def test_aggregate_all_picks_best_model_and_fails_on_collapse(tmp_path):
    for seed, f1 in ((1, 0.70), (2, 0.74), (3, 0.72)):
        write_seed(tmp_path, "transformer", seed, f1=f1)
    write_seed(tmp_path, "gnn", 1, f1=0.9)  # best single seed, but the mean is over one
    write_seed(tmp_path, "gnn", 2, "collapsed")
    write_seed(tmp_path, "gnn", 3, "failed", error="boom")
    for seed, f1 in ((1, 0.5), (2, 0.52), (3, 0.51)):
        write_seed(tmp_path, "baseline", seed, f1=f1)

    criteria = SuccessCriteria(min_mean_f1=0.6, max_f1_std=0.05)
    summary = aggregate_all(tmp_path, plan("transformer", "gnn", "baseline"), criteria)

    assert summary["best_overall_model"] == "gnn"
    assert summary["best_overall_f1"] == pytest.approx(0.9)
    assert summary["best_seed"]["seed"] == 1 and summary["best_seed"]["model"] == "gnn"
    assert summary["best_seed"]["run_dir"] == str(tmp_path / "gnn" / "seed_1")
    checks = _checks(summary)
    assert checks["mean_f1:gnn"]["passed"] and checks["mean_f1:transformer"]["passed"]
    # one completed seed: no spread to measure, so the std check cannot pass
    assert checks["f1_std:gnn"]["value"] is None and not checks["f1_std:gnn"]["passed"]
    assert checks["f1_std:gnn"]["detail"].startswith("one seed: std n/a")
    assert not checks["all_seeds_completed"]["passed"]
    assert checks["all_seeds_completed"]["model"] is None
    assert checks["all_seeds_completed"]["value"] == {
        "total": 9,
        "completed": 7,
        "collapsed": 1,
        "failed": 1,
    }
    assert checks["all_seeds_completed"]["detail"] == (
        "7 of 9 runs completed (gnn seed 2 collapsed, gnn seed 3 failed)"
    )
    assert not checks["no_collapse"]["passed"] and checks["no_collapse"]["value"] == 1
    assert "gnn seed 2 (constant_predictions)" in checks["no_collapse"]["detail"]
    assert summary["success"]["passed"] is False
    assert summary["criteria"] == criteria.model_dump()
    on_disk = json.loads((tmp_path / "production_summary" / "production_summary.json").read_text())
    assert on_disk["best_overall_model"] == "gnn"
    assert set(on_disk["models"]) == {"transformer", "gnn", "baseline"}
    assert datetime.fromisoformat(on_disk["generated_at"]).tzinfo is not None


def test_the_best_model_is_chosen_by_the_threshold_objective_and_judged_on_its_metrics(tmp_path):
    for seed in (1, 2, 3):
        write_seed(tmp_path, "gnn", seed, f1=0.8, accuracy=0.70)
        write_seed(tmp_path, "transformer", seed, f1=0.6, accuracy=0.75)
    by_accuracy = TrainingPlan(models=["gnn", "transformer"], seeds=[1, 2, 3],
                               train={"threshold_objective": "accuracy"})  # fmt: skip
    criteria = SuccessCriteria(min_mean_f1=0.0, trivial_metrics=["accuracy", "roc_auc"])
    summary = aggregate_all(tmp_path, by_accuracy, criteria)
    assert summary["best_overall_model"] == "transformer"
    assert summary["best_overall_selected_by"] == "accuracy"
    assert summary["best_overall_value"] == pytest.approx(0.75)
    checks = _checks(summary)
    assert checks["beats_chance_roc_auc:gnn"]["passed"]
    assert checks["beats_chance_roc_auc:gnn"]["threshold"] == 0.5
    assert "beats_all_vulnerable_f1:gnn" not in checks  # not among criteria.trivial_metrics
    by_f1 = aggregate_all(tmp_path, plan("gnn", "transformer"), SuccessCriteria())
    assert by_f1["best_overall_model"] == "gnn" and by_f1["best_overall_selected_by"] == "f1"


def test_every_check_names_its_model_and_explains_itself(tmp_path):
    for seed in (1, 2, 3):
        write_seed(tmp_path, "transformer", seed, f1=0.8)
        write_seed(tmp_path, "baseline", seed, f1=0.6)
    summary = aggregate_all(tmp_path, plan("transformer", "baseline"), SuccessCriteria())
    checks = summary["success"]["checks"]
    assert [c["name"] for c in checks] == [
        "mean_f1:transformer",
        "f1_std:transformer",
        "beats_all_vulnerable_f1:transformer",
        "beats_majority_accuracy:transformer",
        "all_seeds_completed",
        "no_collapse",
    ]  # the baseline is the reference: reported, not judged
    assert summary["success"]["judged_models"] == ["transformer"]
    for check in checks:
        assert set(check) == {"name", "model", "passed", "skipped", "value", "threshold", "detail"}
        assert isinstance(check["detail"], str) and check["detail"]
    assert [c["model"] for c in checks] == ["transformer"] * 4 + [None, None]
    assert summary["success"]["passed"] is True
    assert "baseline" in summary["models"] and summary["models"]["baseline"]["kind"] == "baseline"


def test_best_model_below_the_all_vulnerable_f1_fails(tmp_path):
    # 60% vulnerable: predicting "vulnerable" everywhere scores F1 2*0.6/1.6 = 0.75
    for seed, f1 in ((1, 0.64), (2, 0.65), (3, 0.66)):
        write_seed(tmp_path, "transformer", seed, f1=f1, accuracy=0.7, vulnerable=60)
        write_seed(tmp_path, "baseline", seed, f1=0.55, accuracy=0.6, vulnerable=60)
    criteria = SuccessCriteria(min_mean_f1=0.6)
    summary = aggregate_all(tmp_path, plan("transformer", "baseline"), criteria)

    assert summary["best_overall_model"] == "transformer"
    checks = _checks(summary)
    assert checks["mean_f1:transformer"]["passed"]  # 0.65 >= 0.6 ...
    trivial = checks["beats_all_vulnerable_f1:transformer"]
    assert not trivial["passed"]  # ... but below the trivial predictor
    assert (trivial["value"], trivial["threshold"]) == (pytest.approx(0.65), pytest.approx(0.75))
    assert "predicting 'vulnerable' for every function" in trivial["detail"]
    assert "60.0% vulnerable on test" in trivial["detail"]
    majority = checks["beats_majority_accuracy:transformer"]
    assert majority["passed"] and majority["threshold"] == pytest.approx(0.6)
    assert summary["success"]["passed"] is False
    assert failed_check_lines(summary["success"]) == [
        f"beats_all_vulnerable_f1:transformer: {trivial['detail']}"
    ]

    # the switch turns both trivial checks off, still reporting their values
    lenient = aggregate_all(
        tmp_path,
        plan("transformer", "baseline"),
        SuccessCriteria(min_mean_f1=0.6, beat_trivial=False),
    )
    off = _checks(lenient)["beats_all_vulnerable_f1:transformer"]
    assert off["skipped"] and off["passed"] and off["threshold"] == pytest.approx(0.75)
    assert off["detail"].startswith("switched off")
    assert lenient["success"]["passed"] is True


def test_a_model_below_the_majority_accuracy_fails(tmp_path):
    # 30% vulnerable: predicting "safe" everywhere is 70% accurate
    for seed in (1, 2, 3):
        write_seed(tmp_path, "gnn", seed, f1=0.8, accuracy=0.68, vulnerable=30)
    summary = aggregate_all(tmp_path, plan("gnn"), SuccessCriteria())
    check = _checks(summary)["beats_majority_accuracy:gnn"]
    assert not check["passed"]
    assert (check["value"], check["threshold"]) == (pytest.approx(0.68), pytest.approx(0.7))
    assert summary["success"]["passed"] is False


def test_one_seed_has_no_std_or_ci_and_fails_the_std_check(tmp_path):
    write_seed(tmp_path, "transformer", 42, f1=0.8)
    summary = aggregate_all(tmp_path, plan("transformer", seeds=(42,)), SuccessCriteria())
    f1 = summary["models"]["transformer"]["metrics"]["f1"]
    assert f1 == {"mean": 0.8, "std": None, "ci95_low": None, "ci95_high": None, "n": 1,
                  "trivial": pytest.approx(2 * 0.4 / 1.4)}  # fmt: skip
    check = _checks(summary)["f1_std:transformer"]
    assert check["passed"] is False and check["value"] is None
    assert check["threshold"] == 0.05 and check["detail"].startswith("one seed: std n/a")
    assert summary["success"]["passed"] is False
    assert [c["name"] for c in summary["success"]["checks"] if not c["passed"]] == [
        "f1_std:transformer"
    ]

    # with the std bound switched off, the same run passes
    no_std = aggregate_all(
        tmp_path, plan("transformer", seeds=(42,)), SuccessCriteria(max_f1_std=None)
    )
    check = _checks(no_std)["f1_std:transformer"]
    assert check["skipped"] is True and check["passed"] is True and check["threshold"] is None
    assert no_std["success"]["passed"] is True


def test_every_neural_model_is_judged_not_only_the_best(tmp_path):
    for seed, f1 in ((1, 0.80), (2, 0.82), (3, 0.81)):
        write_seed(tmp_path, "transformer", seed, f1=f1)
    for seed, f1 in ((1, 0.66), (2, 0.65), (3, 0.67)):
        write_seed(tmp_path, "gnn_small", seed, f1=f1)
    two_neural = plan("transformer", {"kind": "gnn", "name": "gnn_small", "hidden_dim": 16})
    summary = aggregate_all(tmp_path, two_neural, SuccessCriteria(min_mean_f1=0.7))

    assert summary["best_overall_model"] == "transformer"
    checks = _checks(summary)
    assert checks["mean_f1:transformer"]["passed"]
    low = checks["mean_f1:gnn_small"]
    assert not low["passed"] and low["model"] == "gnn_small"
    assert low["value"] == pytest.approx(0.66) and low["threshold"] == 0.7
    assert low["detail"] == "mean F1 0.6600 over 3 seeds < 0.7000"
    assert summary["models"]["gnn_small"]["kind"] == "gnn"
    assert summary["success"]["passed"] is False


def test_a_plan_without_neural_models_judges_every_model(tmp_path):
    for seed in (1, 2, 3):
        write_seed(tmp_path, "baseline", seed, f1=0.8)
    summary = aggregate_all(tmp_path, plan("baseline"), SuccessCriteria())
    check = _checks(summary)["mean_f1:baseline"]
    assert check["passed"]
    assert "no neural model in the plan: every model is judged" in check["detail"]
    assert summary["success"]["judged_models"] == ["baseline"]
    assert summary["success"]["passed"] is True


def test_best_seed_of_the_best_model(tmp_path):
    for seed, f1 in ((1, 0.70), (2, 0.74), (3, 0.72)):
        write_seed(tmp_path, "transformer", seed, f1=f1)
    for seed in (1, 2, 3):
        write_seed(tmp_path, "baseline", seed, f1=0.6)
    summary = aggregate_all(tmp_path, plan("transformer", "baseline"), SuccessCriteria())
    assert summary["best_overall_model"] == "transformer"
    assert summary["best_overall_f1"] == pytest.approx(0.72)
    assert summary["best_seed"]["seed"] == 2
    assert summary["best_seed"]["model_dir"] == str(tmp_path / "transformer" / "seed_2" / "model")


def test_criteria_pass_and_fail(tmp_path):
    f1s = (0.70, 0.74, 0.72)
    for seed, f1 in zip((1, 2, 3), f1s, strict=True):
        write_seed(tmp_path, "transformer", seed, f1=f1)

    passing = aggregate_all(
        tmp_path, plan("transformer"), SuccessCriteria(min_mean_f1=0.7, max_f1_std=0.05)
    )
    assert passing["success"]["passed"] is True
    assert all(check["passed"] for check in passing["success"]["checks"])
    std_check = _checks(passing)["f1_std:transformer"]
    assert std_check["value"] == pytest.approx(np.std(f1s, ddof=1))

    too_low = aggregate_all(tmp_path, plan("transformer"), SuccessCriteria(min_mean_f1=0.8))
    assert too_low["success"]["passed"] is False
    check = _checks(too_low)["mean_f1:transformer"]
    assert not check["passed"]
    assert (check["value"], check["threshold"]) == (pytest.approx(0.72), 0.8)

    too_spread = aggregate_all(tmp_path, plan("transformer"), SuccessCriteria(max_f1_std=0.01))
    assert too_spread["success"]["passed"] is False
    assert not _checks(too_spread)["f1_std:transformer"]["passed"]


def test_disabled_checks_are_skipped_and_pass(tmp_path):
    for seed in (1, 2):
        write_seed(tmp_path, "transformer", seed, f1=0.8)
    write_seed(tmp_path, "transformer", 3, "collapsed")
    write_seed(tmp_path, "transformer", 4, "failed", error="lost")
    lenient = SuccessCriteria(min_mean_f1=0.7, require_all_seeds=False, require_no_collapse=False)
    summary = aggregate_all(tmp_path, plan("transformer", seeds=(1, 2, 3, 4)), lenient)
    checks = _checks(summary)
    for name in ("all_seeds_completed", "no_collapse"):
        assert checks[name]["passed"] is True and checks[name]["skipped"] is True
        assert checks[name]["detail"].startswith("switched off")
    assert checks["no_collapse"]["value"] == 1  # still reported
    assert summary["success"]["passed"] is True

    strict = aggregate_all(
        tmp_path, plan("transformer", seeds=(1, 2, 3, 4)), SuccessCriteria(min_mean_f1=0.7)
    )
    assert _checks(strict)["no_collapse"]["skipped"] is False
    assert strict["success"]["passed"] is False


def test_plan_seeds_that_never_ran_count_as_failed(tmp_path):
    write_seed(tmp_path, "transformer", 1, f1=0.8)
    summary = aggregate_all(tmp_path, plan("transformer", seeds=(1, 2)), SuccessCriteria())
    rows = summary["models"]["transformer"]["seeds"]
    assert [(r["seed"], r["status"]) for r in rows] == [(1, "completed"), (2, "failed")]
    assert not _checks(summary)["all_seeds_completed"]["passed"]


def test_nothing_completed(tmp_path):
    write_seed(tmp_path, "gnn", 1, "failed", error="bad data")
    summary = aggregate_all(tmp_path, plan("gnn", "transformer", seeds=(1,)), SuccessCriteria())
    assert summary["best_overall_model"] is None
    assert summary["best_overall_f1"] is None and summary["best_seed"] is None
    check = _checks(summary)["mean_f1:gnn"]
    assert check["passed"] is False and check["value"] is None
    assert check["detail"].startswith("no completed seed")
    assert summary["models"]["gnn"]["trivial"]["all_vulnerable_f1"] is None
    assert not _checks(summary)["beats_all_vulnerable_f1:gnn"]["passed"]
    assert summary["success"]["passed"] is False


def test_pipeline_core_never_imports_prefect():
    code = (
        "import sys\n"
        "import streamguard_core.pipeline.aggregate, streamguard_core.pipeline.report\n"
        "import streamguard_core.pipeline.registry\n"
        "assert 'prefect' not in sys.modules, 'prefect imported'\n"
    )
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
