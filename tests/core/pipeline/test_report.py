"""The production report: markdown content, PNG plots from real seed files, UI table rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streamguard_core.config import SuccessCriteria, TrainingPlan
from streamguard_core.pipeline.aggregate import aggregate_all
from streamguard_core.pipeline.report import report_table_rows, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNREACHED = "no threshold reaches precision 0.9: the highest, 0.750 (recall 0.500), is at 0.7"


def write_seed(
    root: Path,
    model: str,
    seed: int,
    status: str = "completed",
    *,
    f1: float = 0.7,
    error: str | None = None,
    cost_usd: float | None = None,
    history: bool = True,
    predictions: list[tuple[int, float]] | None = None,
    tuning: dict | None = None,
) -> Path:
    """A seed directory following the production run's on-disk contract (``tuning``: the
    threshold keys its metrics carry; None: none, as before thresholds per objective)."""
    seed_dir = root / model / f"seed_{seed}"
    seed_dir.mkdir(parents=True)
    cost = None
    if cost_usd is not None:
        cost = {
            "instance_type": "ml.g5.xlarge",
            "training_time_s": 300.0,
            "billable_time_s": 100.0,
            "spot_savings_pct": 66.7,
            "cost_usd": cost_usd,
        }
    status_doc = {
        "model": model,
        "kind": model,
        "seed": seed,
        "status": status,
        "error": error,
        "wall_s": 30.0,
        "backend": "sagemaker" if cost else "local",
        "device": "cpu",
        "run_dir": str(seed_dir),
        "cost": cost,
    }
    (seed_dir / "run_status.json").write_text(json.dumps(status_doc))
    epochs = [
        {
            "epoch": e,
            "train_loss": None if e == 0 else 0.7 - 0.1 * e,
            "valid_f1": f1 - 0.1 + 0.05 * e,
            "valid_roc_auc": None,
            "valid_accuracy": 0.7,
            "threshold": 0.5,
            "lr": 1e-3,
            "seconds": 1.0,
            "global_step": 5 * (e + 1),
        }
        for e in range(3)
    ]
    metadata = {"history": epochs, "best_epoch": 2} if history else {"history": []}
    (seed_dir / "training_metadata.json").write_text(json.dumps(metadata))
    if status == "completed":
        metrics = {
            "threshold": 0.5,
            "accuracy": 0.8,
            "accuracy_at_half": f1 + 0.05,
            "precision": 0.7,
            "recall": 0.72,
            "f1": f1,
            "macro_f1": 0.78,
            "roc_auc": 0.86,
            "pr_auc": 0.8,
            "mcc": 0.55,
            "confusion_matrix": [[5, 1], [2, 4]],
            **(tuning or {}),
        }
        (seed_dir / "metrics.json").write_text(json.dumps({"valid": metrics, "test": metrics}))
        preds = predictions or [(1, 0.9), (0, 0.2), (1, 0.6), (0, 0.7), (1, 0.4), (0, 0.1)]
        with open(seed_dir / "predictions.jsonl", "w") as fh:
            for i, (label, prob) in enumerate(preds):
                row = {"id": f"f{i}", "label": label, "probability": prob}
                fh.write(json.dumps({**row, "prediction": int(prob >= 0.5)}) + "\n")
    if status == "collapsed":
        report = {
            "reason": "nan_loss",
            "detail": "loss became NaN at step 12",
            "epoch": 0,
            "step": 12,
            "history": {},
            "kind": model,
            "seed": seed,
            "exit_code": 3,
        }
        (seed_dir / "collapse_report.json").write_text(json.dumps(report))
    return seed_dir


def plan(*kinds: str, seeds: tuple[int, ...] = (1, 2, 3)) -> TrainingPlan:
    """A plan of these model kinds and seeds."""
    return TrainingPlan(models=list(kinds), seeds=list(seeds))


@pytest.fixture()
def full_run(tmp_path):
    """Three models: a clean transformer, a gnn with a collapse and a failure, a baseline."""
    for seed, f1 in ((1, 0.70), (2, 0.74), (3, 0.72)):
        tuned = {"threshold_objective": "accuracy", "threshold_note": None}
        write_seed(tmp_path, "transformer", seed, f1=f1, cost_usd=0.5, tuning=tuned)
    unreached = {"threshold_objective": "precision", "threshold_note": UNREACHED}
    write_seed(tmp_path, "gnn", 1, f1=0.6, tuning=unreached)
    write_seed(tmp_path, "gnn", 2, "collapsed", error="collapsed: nan_loss")
    write_seed(tmp_path, "gnn", 3, "failed", error="RuntimeError: CUDA out of memory")
    for seed in (1, 2, 3):
        write_seed(tmp_path, "baseline", seed, f1=0.55, history=False)
    summary = aggregate_all(tmp_path, plan("transformer", "gnn", "baseline"), SuccessCriteria())
    return tmp_path, summary


def _png_ok(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_report_writes_markdown_and_valid_pngs(full_run):
    root, summary = full_run
    md_path = write_report(summary, root)
    out = root / "production_summary"
    assert md_path == out / "production_report.md"
    for name in ("training_curves.png", "confusion_matrix.png", "pr_curve.png"):
        assert _png_ok(out / name), name
    text = md_path.read_text()
    links = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))
    assert links == {"training_curves.png", "confusion_matrix.png", "pr_curve.png"}
    assert all((out / link).exists() for link in links)
    assert "Not drawn" not in text
    assert not list(out.glob(".*.tmp"))  # temp files renamed away


def test_report_verdict_tables_failures_cost_and_best_model(full_run):
    root, summary = full_run
    text = write_report(summary, root).read_text()
    assert text.startswith("# ")
    assert "## Verdict: FAILED" in text
    assert (
        "| run | no_collapse | 1 | 0 | FAIL | 1 run(s) collapsed: gnn seed 2 (nan_loss) |" in text
    )
    assert re.search(r"\| run \| all_seeds_completed \| [^|]+ \| 9 \| FAIL \|", text)
    assert re.search(r"\| transformer \| mean_f1:transformer \| 0\.7200 \| 0\.7000 \| pass", text)
    # transformer: mean 0.72, sample std of (0.70, 0.74, 0.72) = 0.020
    assert "| f1 | 0.720 | 0.020 | [0.670, 0.770] | 3 |" in text
    assert "### transformer" in text and "### gnn" in text and "### baseline" in text
    assert "gnn seed 2 **collapsed** (epoch 0, step 12): nan_loss: loss became NaN" in text
    assert "gnn seed 3 **failed**: RuntimeError: CUDA out of memory" in text
    assert "## Cost" in text and "Total: $1.5000 (billable time" in text
    assert "cost_usd |" in text  # per-seed cost column for the model that has costs
    best_dir = root / "transformer" / "seed_2"  # F1 0.74
    assert f"run directory: `{best_dir}`" in text
    assert "model directory: `n/a`" in text  # the fake run saved no model/


def test_report_passes_and_skips_absent_plots(tmp_path):
    # baseline only: no training history; single-class predictions give no PR curve
    write_seed(tmp_path, "baseline", 1, f1=0.9, history=False, predictions=[(1, 0.9), (1, 0.8)])
    out = tmp_path / "production_summary"
    out.mkdir()
    (out / "training_curves.png").write_bytes(b"stale")  # left by an earlier report
    lenient = SuccessCriteria(min_mean_f1=0.5, max_f1_std=None, beat_trivial=False)
    summary = aggregate_all(tmp_path, plan("baseline", seeds=(1,)), lenient)
    text = write_report(summary, tmp_path).read_text()
    assert "## Verdict: PASSED" in text
    assert "Not drawn: no neural run recorded a training history." in text
    assert "Not drawn: no completed seed with two-class predictions." in text
    assert not (out / "training_curves.png").exists()
    assert not (out / "pr_curve.png").exists()
    assert _png_ok(out / "confusion_matrix.png")
    assert "](confusion_matrix.png)" in text and "](pr_curve.png)" not in text
    assert "None: every run completed." in text and "## Cost" not in text


def test_report_when_nothing_completed(tmp_path):
    write_seed(tmp_path, "gnn", 1, "failed", error="no data", history=False)
    summary = aggregate_all(tmp_path, plan("gnn", seeds=(1,)), SuccessCriteria())
    text = write_report(summary, tmp_path).read_text()
    assert "## Verdict: FAILED" in text
    assert "Best model: none" in text and "No model completed a seed." in text
    assert text.count("Not drawn") == 3
    assert not list((tmp_path / "production_summary").glob("*.png"))


def test_report_table_rows(full_run):
    _, summary = full_run
    rows = report_table_rows(summary)
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("transformer", 1),
        ("transformer", 2),
        ("transformer", 3),
        ("gnn", 1),
        ("gnn", 2),
        ("gnn", 3),
        ("baseline", 1),
        ("baseline", 2),
        ("baseline", 3),
    ]
    by_key = {(r["model"], r["seed"]): r for r in rows}
    assert by_key[("transformer", 2)]["f1"] == pytest.approx(0.74)
    assert by_key[("transformer", 2)]["cost_usd"] == pytest.approx(0.5)
    assert by_key[("gnn", 3)]["status"] == "failed"
    assert "CUDA out of memory" in by_key[("gnn", 3)]["error"]
    assert by_key[("gnn", 2)]["f1"] is None and by_key[("baseline", 1)]["cost_usd"] is None
    assert all(not isinstance(v, dict | list) for row in rows for v in row.values())


def _row(text: str, first_cell: str, section: str) -> list[str]:
    """The cells of the first table row under heading ``section`` whose first cell matches."""
    for line in text.split(f"\n{section}\n", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


def test_report_shows_every_model_with_ci_and_trivial_references(full_run):
    root, summary = full_run
    text = write_report(summary, root).read_text()
    header = _row(text, "model", "## Models")
    assert header == [
        "model", "kind", "judged", "seeds done", "split", "threshold objective", "F1",
        "all-vulnerable F1", "accuracy", "accuracy at 0.5", "majority accuracy", "F1 std",
        "ROC-AUC", "chance ROC-AUC",
    ]  # fmt: skip
    transformer = dict(zip(header, _row(text, "transformer", "## Models"), strict=True))
    # predictions.jsonl of every seed: 3 of 6 vulnerable -> F1 2*0.5/1.5, accuracy 0.5
    assert transformer["all-vulnerable F1"] == "0.667"
    assert transformer["majority accuracy"] == "0.500"
    assert transformer["chance ROC-AUC"] == "0.500"
    assert transformer["F1"] == "0.720 ± 0.050"  # t(0.975, 2) * 0.02 / sqrt(3)
    assert transformer["accuracy at 0.5"] == "0.770 ± 0.050"  # F1 + 0.05 per seed
    assert transformer["accuracy"] == "0.800 ± 0.000"
    assert transformer["threshold objective"] == "accuracy"
    assert transformer["judged"] == "yes" and transformer["seeds done"] == "3/3"
    gnn = dict(zip(header, _row(text, "gnn", "## Models"), strict=True))
    assert gnn["F1"] == "0.600 ± n/a" and gnn["F1 std"] == "n/a"  # one completed seed
    assert gnn["seeds done"] == "1/3" and gnn["threshold objective"] == "precision"
    baseline = dict(zip(header, _row(text, "baseline", "## Models"), strict=True))
    assert baseline["judged"] == "reference" and baseline["all-vulnerable F1"] == "0.667"
    assert baseline["threshold objective"] == "n/a"  # its metrics predate the objective keys
    # a target precision no threshold reached is shown under its model
    assert f"- threshold warning, seed 1: {UNREACHED}" in text.split("### gnn", 1)[1]
    assert "Decision threshold tuned on valid for: accuracy." in text
    # the per-model statistics carry each metric's trivial reference
    assert "| accuracy_at_half | 0.770 | 0.020 | [0.720, 0.820] | 3 | 0.500 |" in text
    assert "| roc_auc | 0.860 | 0.000 | [0.860, 0.860] | 3 | 0.500 |" in text
    assert "| f1 | 0.720 | 0.020 | [0.670, 0.770] | 3 | 0.667 |" in text
    assert "Trivial references on 6 items of test (50.0% vulnerable, from predictions.jsonl)" in (
        text
    )


def test_report_one_seed_shows_na_and_the_failed_std_check(tmp_path):
    write_seed(tmp_path, "transformer", 7, f1=0.9)
    summary = aggregate_all(tmp_path, plan("transformer", seeds=(7,)), SuccessCriteria())
    text = write_report(summary, tmp_path).read_text()
    assert "## Verdict: FAILED" in text
    assert "- **f1_std:transformer**: one seed: std n/a" in text
    check = _row(text, "transformer", "## Verdict: FAILED")  # the checks table
    assert check[1:5] == ["mean_f1:transformer", "0.9000", "0.7000", "pass"]
    std_row = next(r for r in text.splitlines() if "| f1_std:transformer |" in r)
    assert "| n/a | 0.0500 | FAIL | one seed: std n/a" in std_row
    assert "| f1 | 0.900 | n/a | n/a | 1 |" in text  # mean, std, 95% CI, n
    assert "[0.900, 0.900]" not in text  # no zero-width interval
