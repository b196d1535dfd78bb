"""`compare_runs` and `streamguard compare` on small synthetic runs written in tmp_path."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.cli import main
from streamguard_core.config import seed_dir
from streamguard_core.evaluation.compare import (
    PLOT_FILES,
    ComparisonError,
    compare_runs,
    comparison_markdown,
)
from streamguard_core.io import atomic_write_json, write_jsonl
from streamguard_core.pipeline.aggregate import summarize_values

N_ITEMS = 400
LABELS = (np.random.default_rng(0).random(N_ITEMS) < 0.4).astype(int)


def write_run(
    root: Path,
    model: str,
    seed: int,
    separation: float,
    *,
    noise_seed: int | None = None,
    ids: list[str] | None = None,
    status: str = "completed",
) -> Path:
    """One run directory: predictions of a model whose logit is ``separation * (2y - 1)`` plus
    unit Gaussian noise (seeded by model and seed), thresholded at 0.5; metrics.json holds the
    threshold; run_status.json the status."""
    rng = np.random.default_rng(
        noise_seed if noise_seed is not None else zlib.crc32(f"{model}/{seed}".encode())
    )
    p = 1 / (1 + np.exp(-(separation * (2 * LABELS - 1) + rng.normal(0, 1, N_ITEMS))))
    run = seed_dir(root, model, seed)
    names = ids or [f"fn{i:04d}" for i in range(N_ITEMS)]
    write_jsonl(run / "predictions.jsonl", (
        {"id": names[i], "label": int(LABELS[i]), "probability": float(p[i]),
         "prediction": int(p[i] >= 0.5)} for i in range(N_ITEMS)
    ))  # fmt: skip
    atomic_write_json(run / "metrics.json", {"valid": {"threshold": 0.5}})
    atomic_write_json(run / "run_status.json", {"status": status})
    return run


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, dict]:
    """'strong' clearly beats 'weak' at every seed; 'twin' has weak's exact predictions."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (1, 2, 3):
        write_run(root, "strong", seed, 2.0, noise_seed=seed)
        write_run(root, "weak", seed, 0.4, noise_seed=100 + seed)
        write_run(root, "twin", seed, 0.4, noise_seed=100 + seed)
    # 400 resamples: the smallest bootstrap p (1/401) survives Holm over 12 tests (0.03 < 0.05)
    evaluation = compare_runs(root, ["strong", "weak", "twin"], [1, 2, 3], n_boot=400)
    return root, evaluation


def _pair(evaluation: dict, a: str, b: str) -> dict:
    return next(p for p in evaluation["pairs"] if (p["model_a"], p["model_b"]) == (a, b))


def test_clearly_better_model_has_small_p_on_every_test(two_models):
    _, evaluation = two_models
    pair = _pair(evaluation, "strong", "weak")
    assert pair["seeds"] == [1, 2, 3]
    assert {t["test"] for t in pair["tests"]} == {
        "bootstrap_f1", "bootstrap_accuracy", "mcnemar", "delong"
    }  # fmt: skip
    for test in pair["tests"]:
        assert test["effect"] > 0.1 and test["ci95_low"] > 0, test["test"]
        assert test["p"] < 0.01 and test["p_holm"] < 0.05 and test["significant"]
        assert test["p"] == max(row["p"] for row in test["per_seed"])  # intersection-union
        assert len(test["per_seed"]) == 3 and test["seed_mean"]["p"] < 0.01
        assert test["verdict"].startswith("strong beats weak on ")
    delong = next(t for t in pair["tests"] if t["test"] == "delong")
    aucs = [
        evaluation["models"][m]["metrics"]["roc_auc"]["mean"] for m in ("strong", "weak")
    ]  # fmt: skip
    assert delong["effect"] == pytest.approx(aucs[0] - aucs[1])


def test_identical_models_have_p_one(two_models):
    _, evaluation = two_models
    pair = _pair(evaluation, "weak", "twin")
    for test in pair["tests"]:
        assert test["effect"] == 0 and test["p"] == 1.0 and test["p_holm"] == 1.0
        assert not test["significant"]
        assert test["verdict"].startswith("no significant difference between weak and twin")


def test_holm_runs_over_every_pair_and_test(two_models):
    _, evaluation = two_models
    family = [t for pair in evaluation["pairs"] for t in pair["tests"]]
    assert len(evaluation["pairs"]) == 3 and evaluation["holm"]["family_size"] == 12
    smallest = min(family, key=lambda t: t["p"])
    assert smallest["p_holm"] == pytest.approx(min(1.0, 12 * smallest["p"]))
    assert all(t["p_holm"] >= t["p"] for t in family)
    assert evaluation["warnings"] == []


def test_model_summaries_reuse_the_seed_statistics(two_models):
    _, evaluation = two_models
    strong = evaluation["models"]["strong"]
    f1_per_seed = [row["f1"] for row in strong["per_seed"]]
    summary = {k: v for k, v in strong["metrics"]["f1"].items() if k != "bootstrap"}
    assert summary == pytest.approx(summarize_values(f1_per_seed))
    boot = strong["metrics"]["f1"]["bootstrap"]
    assert boot["ci95_low"] < summary["mean"] < boot["ci95_high"]
    assert (
        strong["metrics"]["pr_auc"]["mean"] > 0.9
        and strong["metrics"]["pr_auc"]["bootstrap"] is None
    )
    # threshold 0.5 everywhere: accuracy at the run's threshold is accuracy at 0.5
    assert strong["metrics"]["accuracy"]["mean"] == strong["metrics"]["accuracy_at_half"]["mean"]
    rate = LABELS.mean()
    assert evaluation["trivial"]["all_vulnerable_f1"] == pytest.approx(2 * rate / (1 + rate))
    assert evaluation["trivial"]["majority_accuracy"] == pytest.approx(max(rate, 1 - rate))
    target = strong["seed_mean"]["target_precision"]
    assert target["reached"] and target["target"] == 0.9 and target["precision"] >= 0.9
    assert target["recall_ci95_low"] <= target["recall"] <= target["recall_ci95_high"]
    assert 0 <= strong["seed_mean"]["calibration"]["ece"] < 1


def test_files_written_match_the_result(two_models):
    root, evaluation = two_models
    out = root / "evaluation"
    assert json.loads((out / "evaluation.json").read_text()) == evaluation
    for key, name in PLOT_FILES.items():
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG") and evaluation["plots"][key] == str(out / name)
    markdown = (out / "evaluation.md").read_text()
    assert markdown == comparison_markdown(evaluation)
    assert "| strong (3 seeds) | " in markdown and "*all vulnerable*" in markdown
    assert "- strong beats weak on ROC-AUC: +" in markdown and "DeLong p=" in markdown
    assert "![roc_pr](roc_pr.png)" in markdown
    linked = comparison_markdown(evaluation, image_links={"roc_pr": "data:image/png;base64,AA"})
    assert "![roc_pr](data:image/png;base64,AA)" in linked


def test_a_missing_or_failed_seed_is_skipped_with_its_reason(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path, "a", seed, 1.0)
        write_run(tmp_path, "b", seed, 1.0)
    write_run(tmp_path, "b", 3, 1.0, status="failed")
    evaluation = compare_runs(tmp_path, ["a", "b"], [1, 2, 3], n_boot=50)
    reasons = {(s["model"], s["seed"]): s["reason"] for s in evaluation["skipped"]}
    assert reasons.keys() == {("a", 3), ("b", 3)}
    assert reasons["a", 3].startswith("no run directory")
    assert "run status is 'failed'" in reasons["b", 3]
    assert evaluation["models"]["a"]["seeds"] == [1, 2]
    assert _pair(evaluation, "a", "b")["seeds"] == [1, 2]
    assert "### Skipped seeds" in comparison_markdown(evaluation)
    # 4 tests, 50 resamples: 4/51 >= 0.05, so the bootstrap tests could never be significant
    assert evaluation["warnings"] and "use more than 79 resamples" in evaluation["warnings"][0]


def test_pairs_use_the_common_seeds(tmp_path):
    write_run(tmp_path, "a", 1, 1.0)
    write_run(tmp_path, "a", 2, 1.0)
    write_run(tmp_path, "b", 2, 1.0)
    write_run(tmp_path, "b", 3, 1.0)
    evaluation = compare_runs(tmp_path, ["a", "b"], [1, 2, 3], n_boot=50)
    pair = _pair(evaluation, "a", "b")
    assert pair["seeds"] == [2]
    assert all([row["seed"] for row in t["per_seed"]] == [2] for t in pair["tests"])


def test_models_scored_on_different_items_are_an_error_naming_the_files(tmp_path):
    write_run(tmp_path, "a", 1, 1.0)
    shifted = [f"other{i:04d}" if i < 5 else f"fn{i:04d}" for i in range(N_ITEMS)]
    write_run(tmp_path, "b", 1, 1.0, ids=shifted)
    with pytest.raises(ComparisonError, match="different items") as caught:
        compare_runs(tmp_path, ["a", "b"], [1], n_boot=20)
    message = str(caught.value)
    assert str(seed_dir(tmp_path, "a", 1) / "predictions.jsonl") in message
    assert str(seed_dir(tmp_path, "b", 1) / "predictions.jsonl") in message
    assert "5 only in the first" in message


def test_no_usable_run_is_an_error(tmp_path):
    with pytest.raises(ComparisonError, match="no usable run"):
        compare_runs(tmp_path, ["a"], [1], n_boot=20)


def test_cli_compare(tmp_path, capsys):
    for seed in (7, 8):
        write_run(tmp_path, "baseline", seed, 0.5)
        write_run(tmp_path, "fusion", seed, 1.5)
    out = tmp_path / "report"
    code = main(["compare", str(tmp_path), "--models", "fusion,baseline", "--bootstrap", "100",
                 "--target-precision", "0.8", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "fusion - baseline" in printed and "DeLong (ROC-AUC)" in printed
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["seeds_requested"] == [7, 8] and evaluation["n_boot"] == 100
    assert evaluation["target_precision"] == 0.8
    assert list(evaluation["models"]) == ["fusion", "baseline"]

    # default: every model and seed found
    assert main(["compare", str(tmp_path), "--bootstrap", "20"]) == 0
    found = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert list(found["models"]) == ["baseline", "fusion"]


def test_cli_compare_errors_exit_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "no <model>/seed_<n>/predictions.jsonl" in capsys.readouterr().err
    write_run(tmp_path, "a", 1, 1.0)
    write_run(tmp_path, "b", 1, 1.0, ids=[f"x{i}" for i in range(N_ITEMS)])
    assert main(["compare", str(tmp_path), "--bootstrap", "20"]) == 2
    assert "different items" in capsys.readouterr().err
