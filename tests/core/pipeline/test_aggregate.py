"""Aggregation of a production run's seed directories: statistics, counts, best model, verdict."""

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

from streamguard_core.pipeline.aggregate import (
    METRICS,
    aggregate_all,
    aggregate_model,
    summarize_values,
)
from streamguard_core.pipeline.config import SuccessCriteria


def _metrics(f1: float, accuracy: float = 0.8, roc_auc: float | None = 0.85) -> dict:
    return {
        "n": 100,
        "positives": 40,
        "threshold": 0.45,
        "accuracy": accuracy,
        "precision": f1 - 0.02,
        "recall": f1 + 0.02,
        "f1": f1,
        "macro_f1": f1 + 0.05,
        "roc_auc": roc_auc,
        "pr_auc": None if roc_auc is None else roc_auc - 0.1,
        "mcc": f1 - 0.3,
        "confusion_matrix": [[50, 10], [12, 28]],
        "predicted_positive_rate": 0.38,
    }


def write_seed(
    root: Path,
    model: str,
    seed: int,
    status: str = "completed",
    *,
    f1: float = 0.7,
    splits: tuple[str, ...] = ("valid", "test"),
    error: str | None = None,
    cost_usd: float | None = None,
    epochs: int = 3,
    collapse: dict | None = None,
) -> Path:
    """A seed directory as a real production run leaves it (the on-disk contract)."""
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
        (seed_dir / "metrics.json").write_text(
            json.dumps({split: _metrics(f1) for split in splits})
        )
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
    assert summarize_values([0.5]) == {
        "mean": 0.5,
        "std": 0.0,
        "ci95_low": 0.5,
        "ci95_high": 0.5,
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
    # statistics only over the completed seed
    assert summary["metrics"]["f1"] == {
        "mean": 0.6,
        "std": 0.0,
        "ci95_low": 0.6,
        "ci95_high": 0.6,
        "n": 1,
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


# ------------------------------------------------------------------ aggregate_all


def _checks(summary: dict) -> dict[str, dict]:
    return {check["name"]: check for check in summary["success"]["checks"]}


def test_aggregate_all_picks_best_model_and_fails_on_collapse(tmp_path):
    for seed, f1 in ((1, 0.70), (2, 0.74), (3, 0.72)):
        write_seed(tmp_path, "transformer", seed, f1=f1)
    write_seed(tmp_path, "gnn", 1, f1=0.9)  # best single seed, but the mean is over one
    write_seed(tmp_path, "gnn", 2, "collapsed")
    write_seed(tmp_path, "gnn", 3, "failed", error="boom")
    for seed, f1 in ((1, 0.5), (2, 0.52), (3, 0.51)):
        write_seed(tmp_path, "baseline", seed, f1=f1)

    criteria = SuccessCriteria(min_mean_f1=0.6, max_f1_std=0.05)
    summary = aggregate_all(tmp_path, ["transformer", "gnn", "baseline"], criteria)

    assert summary["best_overall_model"] == "gnn"
    assert summary["best_overall_f1"] == pytest.approx(0.9)
    assert summary["best_seed"]["seed"] == 1 and summary["best_seed"]["model"] == "gnn"
    assert summary["best_seed"]["run_dir"] == str(tmp_path / "gnn" / "seed_1")
    checks = _checks(summary)
    assert checks["mean_f1_above_threshold"]["passed"]
    assert checks["f1_std_below"]["value"] == 0.0
    assert not checks["all_seeds_completed"]["passed"]
    assert checks["all_seeds_completed"]["value"] == {
        "total": 9,
        "completed": 7,
        "collapsed": 1,
        "failed": 1,
    }
    assert not checks["no_collapse"]["passed"] and checks["no_collapse"]["value"] == 1
    assert summary["success"]["passed"] is False
    assert summary["criteria"] == criteria.model_dump()
    on_disk = json.loads((tmp_path / "production_summary" / "production_summary.json").read_text())
    assert on_disk["best_overall_model"] == "gnn"
    assert set(on_disk["models"]) == {"transformer", "gnn", "baseline"}
    assert datetime.fromisoformat(on_disk["generated_at"]).tzinfo is not None


def test_best_seed_of_the_best_model(tmp_path):
    for seed, f1 in ((1, 0.70), (2, 0.74), (3, 0.72)):
        write_seed(tmp_path, "transformer", seed, f1=f1)
    write_seed(tmp_path, "baseline", 1, f1=0.6)
    summary = aggregate_all(tmp_path, ["transformer", "baseline"], SuccessCriteria())
    assert summary["best_overall_model"] == "transformer"
    assert summary["best_overall_f1"] == pytest.approx(0.72)
    assert summary["best_seed"]["seed"] == 2
    assert summary["best_seed"]["model_dir"] == str(tmp_path / "transformer" / "seed_2" / "model")


def test_criteria_pass_and_fail(tmp_path):
    f1s = (0.70, 0.74, 0.72)
    for seed, f1 in enumerate(f1s):
        write_seed(tmp_path, "transformer", seed, f1=f1)

    passing = aggregate_all(
        tmp_path, ["transformer"], SuccessCriteria(min_mean_f1=0.7, max_f1_std=0.05)
    )
    assert passing["success"]["passed"] is True
    assert all(check["passed"] for check in passing["success"]["checks"])
    assert _checks(passing)["f1_std_below"]["value"] == pytest.approx(np.std(f1s, ddof=1))

    too_low = aggregate_all(tmp_path, ["transformer"], SuccessCriteria(min_mean_f1=0.8))
    assert too_low["success"]["passed"] is False
    check = _checks(too_low)["mean_f1_above_threshold"]
    assert not check["passed"]
    assert (check["value"], check["threshold"]) == (pytest.approx(0.72), 0.8)

    too_spread = aggregate_all(tmp_path, ["transformer"], SuccessCriteria(max_f1_std=0.01))
    assert too_spread["success"]["passed"] is False
    assert not _checks(too_spread)["f1_std_below"]["passed"]


def test_disabled_checks_are_skipped_and_pass(tmp_path):
    for seed in (1, 2):
        write_seed(tmp_path, "transformer", seed, f1=0.8)
    write_seed(tmp_path, "transformer", 3, "collapsed")
    write_seed(tmp_path, "transformer", 4, "failed", error="lost")
    lenient = SuccessCriteria(min_mean_f1=0.7, require_all_seeds=False, require_no_collapse=False)
    summary = aggregate_all(tmp_path, ["transformer"], lenient)
    checks = _checks(summary)
    for name in ("all_seeds_completed", "no_collapse"):
        assert checks[name]["passed"] is True and checks[name]["skipped"] is True
    assert checks["no_collapse"]["value"] == 1  # still reported
    assert summary["success"]["passed"] is True

    strict = aggregate_all(tmp_path, ["transformer"], SuccessCriteria(min_mean_f1=0.7))
    assert "skipped" not in _checks(strict)["no_collapse"]
    assert strict["success"]["passed"] is False


def test_nothing_completed(tmp_path):
    write_seed(tmp_path, "gnn", 1, "failed", error="bad data")
    summary = aggregate_all(tmp_path, ["gnn", "transformer"], SuccessCriteria())
    assert summary["best_overall_model"] is None
    assert summary["best_overall_f1"] is None and summary["best_seed"] is None
    check = _checks(summary)["mean_f1_above_threshold"]
    assert check["passed"] is False and check["value"] is None
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
