"""Compare trained detectors on the same items, with statistics a user can trust.

Reads ``<output_root>/<model>/seed_<n>/predictions.jsonl`` (rows ``{"id", "label",
"probability", "prediction"}``, see :class:`~streamguard_core.training.paths.RunPaths`) of every
model x seed and writes, in ``out_dir`` (default ``<output_root>/evaluation/``)::

    evaluation.json    everything below (the dict :func:`compare_runs` returns)
    evaluation.md      the markdown section of :func:`comparison_markdown`
    roc_pr.png         ROC and PR curves of every model (seed-mean probabilities)
    reliability.png    reliability diagram (seed-mean probabilities)
    f1_per_seed.png    every seed's F1 with the mean and its t 95% interval

Per model: mean, std and Student-t 95% interval over seeds of accuracy at the run's own
threshold (its ``prediction`` column), accuracy at 0.5 (the CodeXGLUE convention), F1 at its own
threshold, ROC-AUC and PR-AUC; an item-level bootstrap 95% interval of the seed mean (items
resampled once, every seed scored on the same resample); and, on the seed-mean probability,
the expected calibration error and the lowest threshold reaching the target precision with its
recall and a bootstrap interval.

Per pair of models, four tests, each run seed by seed (seed s of A against seed s of B, over the
seeds both have): paired bootstrap of the F1 difference, paired bootstrap of the accuracy
difference, McNemar's exact test on the predictions, DeLong's test on the ROC-AUCs. A pair's p
is the largest p over its seeds (an intersection-union test: it is small only when the
difference is significant at every seed); every seed's p and the p of the same test on the
seed-mean probabilities (thresholded at the mean of the seeds' thresholds) are recorded too.
Holm's correction runs over the whole family (pairs x tests). The effect is the mean over seeds
of A - B, with the paired item bootstrap 95% interval of that seed mean.

A seed that is missing, failed, collapsed or unreadable is skipped with its reason in
``skipped`` (and the markdown); models scored on different items are an error naming the files.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.config import TrainConfig, seed_dir
from streamguard_core.evaluation import stats
from streamguard_core.io import atomic_write_json, atomic_write_text, read_jsonl, to_jsonable
from streamguard_core.pipeline.aggregate import (
    all_vulnerable_f1,
    majority_accuracy,
    summarize_values,
)
from streamguard_core.training.paths import RunPaths

EVALUATION_DIR = "evaluation"
EVALUATION_FILE = "evaluation.json"
MARKDOWN_FILE = "evaluation.md"
PLOT_FILES = {
    "roc_pr": "roc_pr.png",
    "reliability": "reliability.png",
    "f1_per_seed": "f1_per_seed.png",
}
PLOT_TITLES = {
    "roc_pr": "ROC and precision-recall curves (seed-mean probabilities)",
    "reliability": "Reliability diagram (seed-mean probabilities)",
    "f1_per_seed": "F1 per seed with the mean and its t 95% CI",
}
DEFAULT_TARGET_PRECISION: float = TrainConfig.model_fields["target_precision"].default
ALPHA = 0.05
MODEL_METRICS = ("accuracy", "accuracy_at_half", "f1", "roc_auc", "pr_auc")
METRIC_LABELS = {
    "accuracy": "accuracy",
    "accuracy_at_half": "accuracy at 0.5",
    "f1": "F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
}
TESTS: dict[str, tuple[stats.Metric, str]] = {
    # test name -> (metric of its effect, label)
    "bootstrap_f1": ("f1", "paired bootstrap"),
    "bootstrap_accuracy": ("accuracy", "paired bootstrap"),
    "mcnemar": ("accuracy", "McNemar exact"),
    "delong": ("roc_auc", "DeLong"),
}
_SEED_DIR = re.compile(r"^seed_(-?\d+)$")


class ComparisonError(ValueError):
    """The runs cannot be compared (none found, or scored on different items)."""


@dataclass
class SeedRun:
    """One model x seed's predictions, aligned to the comparison's item order."""

    model: str
    seed: int
    path: Path
    ids: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    predictions: np.ndarray
    threshold: float
    threshold_from: str


# --------------------------------------------------------------------------- reading


def model_seeds(output_root: str | Path, model: str) -> list[int]:
    """The seeds of ``model`` that have a ``seed_<n>/predictions.jsonl`` (sorted)."""
    found = []
    model_dir = Path(output_root) / model
    if model_dir.is_dir():
        for child in model_dir.iterdir():
            match = _SEED_DIR.match(child.name)
            if match and RunPaths(child).predictions.is_file():
                found.append(int(match.group(1)))
    return sorted(found)


def discover_runs(output_root: str | Path) -> tuple[list[str], list[int]]:
    """Every ``<model>`` with a ``seed_<n>/predictions.jsonl`` under the root, and the union of
    those seeds (both sorted)."""
    root = Path(output_root)
    children = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    runs = {name: seeds for name in children if (seeds := model_seeds(root, name))}
    return sorted(runs), sorted({s for seeds in runs.values() for s in seeds})


def _status_problem(paths: RunPaths) -> str | None:
    """Why a run's status rules it out (failed, collapsed, unreadable); None when fine or absent."""
    if not paths.status.is_file():
        return None
    try:
        status = json.loads(paths.status.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError) as exc:
        return f"unreadable {paths.status.name}: {exc}"
    if status != "completed":
        return f"run status is {status!r} in {paths.status.name}"
    return None


def _run_threshold(
    paths: RunPaths, probabilities: np.ndarray, predictions: np.ndarray
) -> tuple[float, str]:
    """The run's decision threshold on the predictions' split (``metrics.json``: test when it
    has one, else valid), else the lowest probability it flagged, else 0.5."""
    try:
        metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
        split = "test" if isinstance(metrics.get("test"), dict) else "valid"
        return float(metrics[split]["threshold"]), f"metrics.json ({split})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    if predictions.any():
        return float(probabilities[predictions == 1].min()), "lowest flagged probability"
    return 0.5, "default 0.5 (nothing flagged, no metrics.json)"


def _read_seed(output_root: Path, model: str, seed: int) -> SeedRun | str:
    """A seed's predictions, or why they cannot be used."""
    paths = RunPaths(seed_dir(output_root, model, seed))
    if not paths.root.is_dir():
        return f"no run directory {paths.root}"
    problem = _status_problem(paths)
    if problem:
        return problem
    if not paths.predictions.is_file():
        return f"no {paths.predictions.name} in {paths.root}"
    try:
        rows = list(read_jsonl(paths.predictions))
        ids = np.asarray([str(r["id"]) for r in rows])
        labels = np.asarray([int(r["label"]) for r in rows], dtype=np.int64)
        probabilities = np.asarray([float(r["probability"]) for r in rows], dtype=np.float64)
        predictions = np.asarray([int(r["prediction"]) for r in rows], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {paths.predictions}: {exc!r}"
    if not rows:
        return f"{paths.predictions} is empty"
    if len(set(ids.tolist())) != len(ids):
        return f"{paths.predictions} repeats item ids"
    if not (np.isin(labels, (0, 1)).all() and np.isin(predictions, (0, 1)).all()):
        return f"{paths.predictions}: labels and predictions must be 0/1"
    if not (np.isfinite(probabilities) & (probabilities >= 0) & (probabilities <= 1)).all():
        return f"{paths.predictions}: probabilities must be finite and in [0, 1]"
    order = np.argsort(ids, kind="mergesort")
    threshold, source = _run_threshold(paths, probabilities, predictions)
    return SeedRun(
        model,
        seed,
        paths.predictions,
        ids[order],
        labels[order],
        probabilities[order],
        predictions[order],
        threshold,
        source,
    )


def _check_same_items(runs: list[SeedRun]) -> None:
    """Every run must hold the same item ids with the same labels (ComparisonError otherwise)."""
    reference = runs[0]
    for run in runs[1:]:
        if not np.array_equal(run.ids, reference.ids):
            only_ref = sorted(set(reference.ids.tolist()) - set(run.ids.tolist()))
            only_run = sorted(set(run.ids.tolist()) - set(reference.ids.tolist()))
            raise ComparisonError(
                "the runs were scored on different items: "
                f"{reference.path} has {len(reference.ids)} items, {run.path} has "
                f"{len(run.ids)} ({len(only_ref)} only in the first, e.g. {only_ref[:3]}; "
                f"{len(only_run)} only in the second, e.g. {only_run[:3]})"
            )
        differ = np.flatnonzero(run.labels != reference.labels)
        if differ.size:
            raise ComparisonError(
                f"{reference.path} and {run.path} give different labels to {differ.size} items "
                f"(e.g. id {reference.ids[differ[0]]!r})"
            )


# --------------------------------------------------------------------------- statistics


def _seed_metrics(run: SeedRun) -> dict[str, Any]:
    """One seed's metrics on all items."""
    from sklearn.metrics import average_precision_score

    y = run.labels
    both = len(np.unique(y)) == 2
    return {
        "seed": run.seed,
        "threshold": run.threshold,
        "threshold_from": run.threshold_from,
        "accuracy": stats.metric_value("accuracy", y, run.predictions),
        "accuracy_at_half": stats.metric_value(
            "accuracy", y, (run.probabilities >= 0.5).astype(np.float64)
        ),
        "f1": stats.metric_value("f1", y, run.predictions),
        "roc_auc": stats.metric_value("roc_auc", y, run.probabilities) if both else None,
        "pr_auc": float(average_precision_score(y, run.probabilities)) if both else None,
        "path": str(run.path),
    }


class _Draws:
    """Bootstrap draws of every (model, seed, metric) on one shared set of resamples."""

    def __init__(self, y: np.ndarray, n_boot: int, seed: int) -> None:
        self.y = y
        self.weights = stats.bootstrap_weights(len(y), n_boot, seed)
        self._cache: dict[tuple[str, int | str, str], np.ndarray] = {}

    def of(
        self, key: tuple[str, int | str, str], scores: np.ndarray, metric: stats.Metric
    ) -> np.ndarray:
        """``(B,)`` draws of ``metric`` for ``scores`` (cached under ``key``)."""
        if key not in self._cache:
            self._cache[key] = stats.bootstrap_metric(metric, self.y, scores, self.weights)
        return self._cache[key]


def _scores_for(run: SeedRun, metric: str) -> tuple[np.ndarray, stats.Metric]:
    """The scores a metric is computed from and the bootstrap metric to use."""
    if metric == "accuracy_at_half":
        return (run.probabilities >= 0.5).astype(np.float64), "accuracy"
    if metric == "roc_auc":
        return run.probabilities, "roc_auc"
    if metric not in ("accuracy", "f1"):
        raise ValueError(f"no bootstrap for metric {metric!r}")
    return run.predictions.astype(np.float64), "f1" if metric == "f1" else "accuracy"


def _interval(draws: np.ndarray) -> dict[str, Any]:
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return {"ci95_low": None, "ci95_high": None, "n_valid": 0}
    low, high = np.percentile(finite, stats.CI_QUANTILES)
    return {"ci95_low": float(low), "ci95_high": float(high), "n_valid": int(finite.size)}


def _model_summary(
    runs: list[SeedRun], draws: _Draws, target_precision: float, n_boot: int, seed: int
) -> dict[str, Any]:
    """Per-seed metrics, their t summaries and bootstrap intervals, calibration, target point."""
    per_seed = [_seed_metrics(run) for run in runs]
    metrics: dict[str, Any] = {}
    for metric in MODEL_METRICS:
        summary = summarize_values([row[metric] for row in per_seed])
        bootstrap = None
        if metric != "pr_auc" and all(row[metric] is not None for row in per_seed):
            seed_draws = []
            for run in runs:
                scores, boot_metric = _scores_for(run, metric)
                seed_draws.append(draws.of((run.model, run.seed, metric), scores, boot_metric))
            bootstrap = {"estimate": summary["mean"], **_interval(np.mean(seed_draws, axis=0))}
        metrics[metric] = {**summary, "bootstrap": bootstrap}
    y = runs[0].labels
    mean_probability = np.mean([run.probabilities for run in runs], axis=0)
    return {
        "seeds": [run.seed for run in runs],
        "n_seeds": len(runs),
        "per_seed": per_seed,
        "metrics": metrics,
        "seed_mean": {
            "threshold": float(np.mean([run.threshold for run in runs])),
            "calibration": {
                "ece": stats.expected_calibration_error(y, mean_probability),
                "n_bins": stats.DEFAULT_N_BINS,
                "bins": stats.reliability_diagram(y, mean_probability),
            },
            "target_precision": stats.threshold_for_precision(
                y, mean_probability, target_precision, n_boot=n_boot, seed=seed
            ),
        },
    }


def _ensemble(runs: list[SeedRun]) -> tuple[np.ndarray, np.ndarray]:
    """Seed-mean probability and its predictions at the mean of the seeds' thresholds."""
    probability = np.mean([run.probabilities for run in runs], axis=0)
    threshold = float(np.mean([run.threshold for run in runs]))
    return probability, (probability >= threshold).astype(np.float64)


def _test_once(
    test: str,
    y: np.ndarray,
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    draws_a: np.ndarray | None,
    draws_b: np.ndarray | None,
) -> dict[str, Any]:
    """One test of A against B on one pair of (probabilities, predictions)."""
    metric = TESTS[test][0]
    if test in ("bootstrap_f1", "bootstrap_accuracy"):
        assert draws_a is not None and draws_b is not None
        point_a, point_b = stats.metric_value(metric, y, a[1]), stats.metric_value(metric, y, b[1])
        assert point_a is not None and point_b is not None  # accuracy and F1 are always defined
        summary = stats.difference_summary(point_a - point_b, draws_a - draws_b)
        return {
            "effect": summary["difference"],
            "ci95_low": summary["ci95_low"],
            "ci95_high": summary["ci95_high"],
            "p": summary["p_value"],
        }
    if test == "mcnemar":
        result = stats.mcnemar_exact(y, a[1], b[1])
        return {
            "effect": result["accuracy_difference"],
            "p": result["p_value"],
            "a_right_b_wrong": result["a_right_b_wrong"],
            "a_wrong_b_right": result["a_wrong_b_right"],
        }
    try:
        result = stats.delong_test(y, a[0], b[0])
    except ValueError as exc:
        return {"effect": None, "p": None, "note": str(exc)}
    return {
        "effect": result["difference"],
        "ci95_low": result["ci95_low"],
        "ci95_high": result["ci95_high"],
        "p": result["p_value"],
        "z": result["z"],
    }


def _pair_tests(
    a_runs: list[SeedRun], b_runs: list[SeedRun], draws: _Draws
) -> tuple[list[int], list[dict[str, Any]], str | None]:
    """The four tests of one pair over its common seeds (see the module docstring)."""
    a_by_seed = {run.seed: run for run in a_runs}
    b_by_seed = {run.seed: run for run in b_runs}
    common = sorted(set(a_by_seed) & set(b_by_seed))
    model_a, model_b = a_runs[0].model, b_runs[0].model
    if not common:
        note = f"no seed in common ({model_a}: {sorted(a_by_seed)}, {model_b}: {sorted(b_by_seed)})"
        return (
            common,
            [
                {
                    "test": t,
                    "metric": TESTS[t][0],
                    "effect": None,
                    "ci95_low": None,
                    "ci95_high": None,
                    "p": None,
                    "per_seed": [],
                    "seed_mean": None,
                    "note": note,
                }
                for t in TESTS
            ],
            note,
        )
    y = a_runs[0].labels
    ensemble_a, ensemble_b = _ensemble(a_runs), _ensemble(b_runs)
    results = []
    for test, (metric, _) in TESTS.items():
        per_seed, seed_effects, seed_draws = [], [], []
        for s in common:
            ra, rb = a_by_seed[s], b_by_seed[s]
            da = draws.of((model_a, s, metric), *_scores_for(ra, metric))
            db = draws.of((model_b, s, metric), *_scores_for(rb, metric))
            outcome = _test_once(
                test,
                y,
                (ra.probabilities, ra.predictions.astype(np.float64)),
                (rb.probabilities, rb.predictions.astype(np.float64)),
                da,
                db,
            )
            per_seed.append({"seed": s, **outcome})
            seed_effects.append(outcome["effect"])
            seed_draws.append(da - db)
        ens_da = ens_db = None
        if test.startswith("bootstrap_"):  # on the seed-mean predictions
            ens_da = draws.of((model_a, "seed_mean", metric), ensemble_a[1], metric)
            ens_db = draws.of((model_b, "seed_mean", metric), ensemble_b[1], metric)
        seed_mean = _test_once(test, y, ensemble_a, ensemble_b, ens_da, ens_db)
        p_values = [row["p"] for row in per_seed]
        defined = [e for e in seed_effects if e is not None]
        results.append(
            {
                "test": test,
                "metric": metric,
                "effect": float(np.mean(defined)) if defined else None,
                **{
                    k: v
                    for k, v in _interval(np.mean(seed_draws, axis=0)).items()
                    if k != "n_valid"
                },
                "p": max(p_values) if all(p is not None for p in p_values) else None,
                "per_seed": per_seed,
                "seed_mean": seed_mean,
                "note": next((row["note"] for row in per_seed if row.get("note")), None),
            }
        )
    return common, results, None


def _verdict(model_a: str, model_b: str, test: dict[str, Any], alpha: float) -> str:
    """A plain-language line for one test of a pair."""
    metric = METRIC_LABELS[test["metric"]]
    name = TESTS[test["test"]][1]
    effect = test["effect"]
    if effect is None or test["p"] is None:
        return f"{model_a} vs {model_b} on {metric} ({name}): not tested ({test.get('note')})"
    ci = (
        f" [{test['ci95_low']:+.3f}, {test['ci95_high']:+.3f}]"
        if test.get("ci95_low") is not None
        else ""
    )
    numbers = f"{effect:+.3f}{ci}, {name} p={_p(test['p'])} (Holm {_p(test['p_holm'])})"
    if test["p_holm"] is not None and test["p_holm"] < alpha and effect != 0:
        winner, loser = (model_a, model_b) if effect > 0 else (model_b, model_a)
        shown = numbers if effect > 0 else _flip(test, name)
        return f"{winner} beats {loser} on {metric}: {shown}"
    return f"no significant difference between {model_a} and {model_b} on {metric}: {numbers}"


def _flip(test: dict[str, Any], name: str) -> str:
    """The numbers of a test read as B - A (when B is the winner)."""
    ci = (
        f" [{-test['ci95_high']:+.3f}, {-test['ci95_low']:+.3f}]"
        if test.get("ci95_low") is not None
        else ""
    )
    return f"{-test['effect']:+.3f}{ci}, {name} p={_p(test['p'])} (Holm {_p(test['p_holm'])})"


def _p(value: float | None) -> str:
    """A p-value for people: 3 significant digits, '<0.001' style below 0.001."""
    if value is None:
        return "n/a"
    return f"{value:.3g}" if value >= 0.001 else f"{value:.1e}"


# --------------------------------------------------------------------------- the comparison


def compare_runs(
    output_root: str | Path,
    models: list[str],
    seeds: list[int],
    *,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    n_boot: int = stats.DEFAULT_N_BOOT,
    seed: int = 0,
    out_dir: str | Path | None = None,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Compare ``models`` over ``seeds`` on the items they were scored on; write the results.

    Args:
        output_root: the root holding ``<model>/seed_<n>/predictions.jsonl``.
        models: run names (directories under the root), in the order the pairs use (A - B).
        seeds: the seeds expected of every model; a missing or failed one is skipped and
            recorded in ``skipped``.
        target_precision: the precision whose lowest threshold and recall are reported.
        n_boot: bootstrap resamples for every interval and bootstrap test.
        seed: seed of the bootstrap's random generator.
        out_dir: where ``evaluation.json``, ``evaluation.md`` and the plots go (default
            ``<output_root>/evaluation/``).
        alpha: the family-wise level a Holm-adjusted p is compared with in the verdicts.

    Returns:
        The JSON-safe evaluation also written to ``evaluation.json``: ``items``, ``trivial``,
        ``models`` (per model: ``per_seed``, ``metrics``, ``seed_mean``), ``pairs`` (per pair:
        ``tests`` with effect, CI, ``p``, ``per_seed``, ``seed_mean``, ``p_holm``,
        ``verdict``), ``skipped``, ``plots`` and the settings.

    Raises:
        ComparisonError: no usable run at all, or runs scored on different items.
    """
    if not models:
        raise ComparisonError("no models to compare")
    root = Path(output_root)
    out = Path(out_dir) if out_dir is not None else root / EVALUATION_DIR
    skipped: list[dict[str, Any]] = []
    runs_by_model: dict[str, list[SeedRun]] = {}
    for model in models:
        for s in seeds:
            loaded = _read_seed(root, model, s)
            if isinstance(loaded, str):
                skipped.append({"model": model, "seed": s, "reason": loaded})
            else:
                runs_by_model.setdefault(model, []).append(loaded)
    all_runs = [run for runs in runs_by_model.values() for run in runs]
    if not all_runs:
        reasons = "; ".join(f"{s['model']} seed {s['seed']}: {s['reason']}" for s in skipped)
        raise ComparisonError(f"no usable run under {root} ({reasons or 'nothing to read'})")
    _check_same_items(all_runs)

    y = all_runs[0].labels
    rate = float(y.mean())
    draws = _Draws(y, n_boot, seed)
    model_names = [m for m in models if m in runs_by_model]
    summaries = {
        name: _model_summary(runs_by_model[name], draws, target_precision, n_boot, seed)
        for name in model_names
    }
    pairs: list[dict[str, Any]] = []
    for model_a, model_b in itertools.combinations(model_names, 2):
        common, tests, note = _pair_tests(runs_by_model[model_a], runs_by_model[model_b], draws)
        pairs.append(
            {"model_a": model_a, "model_b": model_b, "seeds": common, "tests": tests, "note": note}
        )
    family = [test for pair in pairs for test in pair["tests"]]
    for test, adjusted in zip(family, stats.holm([t["p"] for t in family]), strict=True):
        test["p_holm"] = adjusted
        test["significant"] = adjusted is not None and adjusted < alpha
    for pair in pairs:
        for test in pair["tests"]:
            test["verdict"] = _verdict(pair["model_a"], pair["model_b"], test, alpha)
    family_size = sum(t["p"] is not None for t in family)
    warnings = []
    if family_size and family_size / (n_boot + 1) >= alpha:
        # the smallest bootstrap p is 1 / (n_boot + 1); Holm multiplies it by up to the family
        warnings.append(
            f"with {n_boot} bootstrap resamples the smallest bootstrap p is 1/{n_boot + 1}, and "
            f"Holm over {family_size} tests can lift it to {family_size / (n_boot + 1):.3g} >= "
            f"{alpha:g}: the paired-bootstrap tests cannot be significant; use more than "
            f"{math.ceil(family_size / alpha) - 1} resamples"
        )

    evaluation: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(),
        "output_root": str(root),
        "out_dir": str(out),
        "models_requested": list(models),
        "seeds_requested": list(seeds),
        "target_precision": target_precision,
        "n_boot": n_boot,
        "bootstrap_seed": seed,
        "alpha": alpha,
        "items": {
            "n": len(y),
            "n_vulnerable": int(y.sum()),
            "vulnerable_rate": rate,
            "source": "predictions.jsonl (test split when the data has one, else valid)",
        },
        "trivial": {
            "all_vulnerable_f1": all_vulnerable_f1(rate),
            "majority_accuracy": majority_accuracy(rate),
        },
        "models": summaries,
        "pairs": pairs,
        "holm": {"family_size": family_size, "alpha": alpha},
        "skipped": skipped,
        "warnings": warnings,
        "methods": {
            "seed_ci": "Student-t 95% interval over seeds",
            "bootstrap": f"item bootstrap, {n_boot} resamples (seed {seed}), percentile 95% "
            "interval of the seed mean, every seed scored on the same resamples",
            "pair_p": "largest p over the common seeds (significant at every seed)",
            "pair_effect": "mean over seeds of A - B with the paired bootstrap 95% interval",
            "seed_mean_test": "the same test on the seed-mean probabilities, thresholded at the "
            "mean of the seeds' thresholds",
            "multiple_testing": "Holm over every pair x test",
            "calibration": f"ECE over {stats.DEFAULT_N_BINS} equal-width bins",
        },
    }
    evaluation["plots"] = _write_plots(evaluation, runs_by_model, out)
    evaluation = to_jsonable(evaluation)
    evaluation["evaluation_path"] = str(out / EVALUATION_FILE)
    evaluation["markdown_path"] = str(out / MARKDOWN_FILE)
    atomic_write_json(out / EVALUATION_FILE, evaluation)
    atomic_write_text(out / MARKDOWN_FILE, comparison_markdown(evaluation))
    return evaluation


def _write_plots(
    evaluation: dict[str, Any], runs_by_model: dict[str, list[SeedRun]], out: Path
) -> dict[str, str]:
    """The three PNGs of the comparison; returns their paths by plot key."""
    from streamguard_core.evaluation import plots

    y = next(iter(runs_by_model.values()))[0].labels
    mean_probability = {
        name: np.mean([run.probabilities for run in runs], axis=0)
        for name, runs in runs_by_model.items()
    }
    written: dict[str, str] = {}
    if len(np.unique(y)) == 2:
        written["roc_pr"] = str(plots.plot_roc_pr(y, mean_probability, out / PLOT_FILES["roc_pr"]))
    models = evaluation["models"]
    written["reliability"] = str(
        plots.plot_reliability(
            {name: m["seed_mean"]["calibration"]["bins"] for name, m in models.items()},
            out / PLOT_FILES["reliability"],
            ece={name: m["seed_mean"]["calibration"]["ece"] for name, m in models.items()},
        )
    )
    f1 = {
        name: {"values": [row["f1"] for row in m["per_seed"]], **m["metrics"]["f1"]}
        for name, m in models.items()
    }
    written["f1_per_seed"] = str(
        plots.plot_seed_f1(
            f1,
            out / PLOT_FILES["f1_per_seed"],
            references={"all vulnerable": evaluation["trivial"]["all_vulnerable_f1"]},
        )
    )
    return written


# --------------------------------------------------------------------------- presentation


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mean_ci(summary: dict[str, Any]) -> str:
    """``0.612 [0.601, 0.623]`` (mean and t 95% CI), or the mean alone with one seed."""
    if summary["mean"] is None:
        return "n/a"
    if summary["ci95_low"] is None:
        return f"{summary['mean']:.3f}"
    return f"{summary['mean']:.3f} [{summary['ci95_low']:.3f}, {summary['ci95_high']:.3f}]"


def _boot_ci(summary: dict[str, Any]) -> str:
    boot = summary.get("bootstrap") or {}
    if boot.get("ci95_low") is None:
        return "n/a"
    return f"[{boot['ci95_low']:.3f}, {boot['ci95_high']:.3f}]"


def _test_label(test: dict[str, Any]) -> str:
    """``DeLong (ROC-AUC)``: a test's short name and the metric of its effect."""
    short = {"bootstrap_f1": "bootstrap", "bootstrap_accuracy": "bootstrap"}
    name = short.get(test["test"], TESTS[test["test"]][1])
    return f"{name} ({METRIC_LABELS[test['metric']]})"


def _effect_cell(test: dict[str, Any]) -> str:
    """``+0.021 [+0.010, +0.030]`` (mean A - B and its 95% CI), or n/a."""
    if test["effect"] is None:
        return "n/a"
    if test.get("ci95_low") is None:
        return f"{test['effect']:+.3f}"
    return f"{test['effect']:+.3f} [{test['ci95_low']:+.3f}, {test['ci95_high']:+.3f}]"


def comparison_markdown(
    evaluation: dict[str, Any], image_links: dict[str, str] | None = None
) -> str:
    """The comparison as a markdown section: models (mean [t 95% CI] over seeds beside the
    trivial references; item-bootstrap CIs, calibration, target precision), pairs (effect, CI,
    p per test, Holm-adjusted p), plain-language verdicts, warnings, skipped seeds and plots.

    Tables are at most seven columns wide, so that they fit the Prefect UI's artifact page.

    Args:
        evaluation: what :func:`compare_runs` returned.
        image_links: plot key (``roc_pr``, ``reliability``, ``f1_per_seed``) -> URL or path of
            the image; default: the PNG file names (for a markdown file beside them).
    """
    items, trivial = evaluation["items"], evaluation["trivial"]
    target = evaluation["target_precision"]
    rate = items["vulnerable_rate"]
    lines = [
        "## Model comparison",
        "",
        f"{items['n']} items ({items['n_vulnerable']} vulnerable, {rate:.1%}) from "
        f"{items['source']}.",
        "",
        "**Mean over seeds [Student-t 95% CI]**, beside the trivial predictors. Accuracy and F1 "
        "at each run's own threshold; accuracy at 0.5 is the CodeXGLUE convention.",
        "",
        "| model | F1 | accuracy | accuracy at 0.5 | ROC-AUC |",
        "|---|---|---|---|---|",
    ]
    for name, model in evaluation["models"].items():
        m = model["metrics"]
        lines.append(
            f"| {name} ({model['n_seeds']} seed{'s' * (model['n_seeds'] != 1)}) | "
            f"{_mean_ci(m['f1'])} | {_mean_ci(m['accuracy'])} | {_mean_ci(m['accuracy_at_half'])} "
            f"| {_mean_ci(m['roc_auc'])} |"
        )
    majority_f1 = 0.0 if rate < 0.5 else trivial["all_vulnerable_f1"]
    lines += [
        f"| *all vulnerable* | {_num(trivial['all_vulnerable_f1'])} | {_num(rate)} | "
        f"{_num(rate)} | 0.500 |",
        f"| *majority class* | {_num(majority_f1)} | {_num(trivial['majority_accuracy'])} | "
        f"{_num(trivial['majority_accuracy'])} | 0.500 |",
        "",
        f"**Item bootstrap** ({evaluation['n_boot']} resamples, seed "
        f"{evaluation['bootstrap_seed']}): 95% CI of the seed mean.",
        "",
        "| model | F1 | accuracy | accuracy at 0.5 | ROC-AUC |",
        "|---|---|---|---|---|",
    ]
    for name, model in evaluation["models"].items():
        m = model["metrics"]
        lines.append(
            f"| {name} | {_boot_ci(m['f1'])} | {_boot_ci(m['accuracy'])} | "
            f"{_boot_ci(m['accuracy_at_half'])} | {_boot_ci(m['roc_auc'])} |"
        )
    lines += [
        "",
        f"**PR-AUC** (mean [t 95% CI]; all vulnerable: {_num(rate)}), and on the seed-mean "
        f"probability the **calibration** and the lowest **threshold reaching precision "
        f"{target:g}** with its recall (bootstrap 95% CI, threshold re-chosen per resample).",
        "",
        f"| model | PR-AUC | ECE | threshold @ precision {target:g} | recall [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name, model in evaluation["models"].items():
        point = model["seed_mean"]["target_precision"]
        threshold, recall = "not reached", "n/a"
        if point["reached"]:
            threshold = f"{point['threshold']:.3f}"
            recall = (
                f"{point['recall']:.3f} [{point['recall_ci95_low']:.3f}, "
                f"{point['recall_ci95_high']:.3f}]"
            )
        lines.append(
            f"| {name} | {_mean_ci(model['metrics']['pr_auc'])} | "
            f"{_num(model['seed_mean']['calibration']['ece'])} | {threshold} | {recall} |"
        )
    if evaluation["pairs"]:
        lines += [
            "",
            "### Paired comparisons (A - B on the same items)",
            "",
            "p: the largest p over the common seeds (significant only if significant at every "
            f"seed); Holm over all {evaluation['holm']['family_size']} tests; effect: mean over "
            "seeds with the paired item-bootstrap 95% CI; seed-mean p: the same test on the "
            "seed-mean probabilities.",
            "",
            "| A - B | test | effect [95% CI] | p | Holm p | seed-mean p |",
            "|---|---|---|---|---|---|",
        ]
        for pair in evaluation["pairs"]:
            for test in pair["tests"]:
                lines.append(
                    f"| {pair['model_a']} - {pair['model_b']} | {_test_label(test)} | "
                    f"{_effect_cell(test)} | {_p(test['p'])} | "
                    f"{_p(test['p_holm'])}{' *' if test['significant'] else ''} | "
                    f"{_p((test.get('seed_mean') or {}).get('p'))} |"
                )
        seeds = sorted({row["seed"] for pair in evaluation["pairs"] for t in pair["tests"]
                        for row in t["per_seed"]})  # fmt: skip
        if seeds:
            lines += [
                "",
                "p of each seed (seed s of A against seed s of B):",
                "",
                "| A - B | test | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                "|---|---|" + "---|" * len(seeds),
            ]
            for pair in evaluation["pairs"]:
                for test in pair["tests"]:
                    by_seed = {row["seed"]: row["p"] for row in test["per_seed"]}
                    cells = " | ".join(_p(by_seed[s]) if s in by_seed else "-" for s in seeds)
                    lines.append(
                        f"| {pair['model_a']} - {pair['model_b']} | {_test_label(test)} | {cells} |"
                    )
        lines += ["", f"**Verdicts** (Holm-adjusted p < {evaluation['alpha']:g}):", ""]
        lines += [f"- {t['verdict']}" for pair in evaluation["pairs"] for t in pair["tests"]]
    if evaluation["warnings"]:
        lines += ["", "### Warnings", ""] + [f"- {w}" for w in evaluation["warnings"]]
    if evaluation["skipped"]:
        lines += ["", "### Skipped seeds", ""]
        lines += [f"- {s['model']} seed {s['seed']}: {s['reason']}" for s in evaluation["skipped"]]
    plots = evaluation.get("plots") or {}
    if plots:
        lines += ["", "### Plots", ""]
        for key, path in plots.items():
            link = (image_links or {}).get(key) or Path(path).name
            lines += [f"**{PLOT_TITLES.get(key, key)}**", "", f"![{key}]({link})", ""]
    return "\n".join(lines).rstrip() + "\n"


def comparison_text(evaluation: dict[str, Any]) -> str:
    """A terminal summary: one line per model (mean [t CI], trivial references) and one per
    pair x test (effect, p, Holm p), then the skipped seeds and where the files are."""
    items, trivial = evaluation["items"], evaluation["trivial"]
    lines = [
        f"{items['n']} items, {items['vulnerable_rate']:.1%} vulnerable; trivial: all-vulnerable "
        f"F1 {trivial['all_vulnerable_f1']:.3f}, majority accuracy "
        f"{trivial['majority_accuracy']:.3f}",
        "",
        f"{'model':<16} {'seeds':>5}  {'accuracy':<22} {'F1':<22} {'ROC-AUC':<22} ECE",
    ]
    for name, model in evaluation["models"].items():
        m = model["metrics"]
        lines.append(
            f"{name:<16} {model['n_seeds']:>5}  {_mean_ci(m['accuracy']):<22} "
            f"{_mean_ci(m['f1']):<22} {_mean_ci(m['roc_auc']):<22} "
            f"{_num(model['seed_mean']['calibration']['ece'])}"
        )
    if evaluation["pairs"]:
        lines += ["", f"{'A - B':<30} {'test':<28} {'effect':>8} {'p':>9} {'Holm p':>9}"]
        for pair in evaluation["pairs"]:
            label = f"{pair['model_a']} - {pair['model_b']}"
            for test in pair["tests"]:
                name = f"{TESTS[test['test']][1]} ({METRIC_LABELS[test['metric']]})"
                effect = "n/a" if test["effect"] is None else f"{test['effect']:+.3f}"
                lines.append(
                    f"{label:<30} {name:<28} {effect:>8} {_p(test['p']):>9} "
                    f"{_p(test['p_holm']):>9}{' *' if test['significant'] else ''}"
                )
    for s in evaluation["skipped"]:
        lines.append(f"skipped: {s['model']} seed {s['seed']}: {s['reason']}")
    lines += [f"warning: {w}" for w in evaluation["warnings"]]
    lines.append(f"written: {evaluation['evaluation_path']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _csv(convert: Any) -> Any:
    """An argparse type: a comma-separated list of ``convert``-ed values."""

    def parse(text: str) -> list[Any]:
        return [convert(part.strip()) for part in text.split(",") if part.strip()]

    parse.__name__ = f"comma-separated {getattr(convert, '__name__', 'value')}"
    return parse


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``compare`` to the ``streamguard`` command's subparsers; returns its parser."""
    parser = subparsers.add_parser(
        "compare",
        help="compare trained models with confidence intervals and paired tests",
        description="Read <output_root>/<model>/seed_<n>/predictions.jsonl of every model and "
        "seed, and report per model mean ± t 95% CI over seeds, an item-bootstrap CI, "
        "calibration and the threshold reaching a target precision; per pair of models the "
        "paired bootstrap of the F1/accuracy difference, McNemar's exact test and DeLong's "
        "test, Holm-corrected. Writes evaluation.json, evaluation.md and PNG plots. Exit code "
        "0 ok, 2 no usable run or models scored on different items.",
        allow_abbrev=False,
    )
    parser.add_argument("output_root", metavar="OUTPUT_ROOT", help="a pipeline's output root")
    parser.add_argument(
        "--models",
        type=_csv(str),
        default=None,
        metavar="A,B",
        help="run names to compare, in this order; pairs read A - B (default: every <model> "
        "with a seed_<n>/predictions.jsonl)",
    )
    parser.add_argument(
        "--seeds",
        type=_csv(int),
        default=None,
        metavar="42,43",
        help="seeds expected of every model; a missing one is reported as skipped (default: "
        "every seed found)",
    )
    parser.add_argument(
        "--target-precision",
        type=float,
        default=DEFAULT_TARGET_PRECISION,
        metavar="P",
        help="precision whose lowest threshold and recall are reported (default: "
        f"{DEFAULT_TARGET_PRECISION:g})",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=stats.DEFAULT_N_BOOT,
        metavar="N",
        help=f"bootstrap resamples (default: {stats.DEFAULT_N_BOOT})",
    )
    parser.add_argument(
        "--bootstrap-seed", type=int, default=0, metavar="S", help="bootstrap seed (default: 0)"
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where the results go (default: OUTPUT_ROOT/evaluation)",
    )
    parser.set_defaults(func=cmd_compare)
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    """``streamguard compare``: print the comparison, write its files; 0 ok, 2 nothing to
    compare or mismatched items."""
    if args.bootstrap < 1 or not 0 < args.target_precision <= 1:
        print(
            "streamguard: error: --bootstrap must be >= 1 and --target-precision in (0, 1]",
            file=sys.stderr,
        )
        return 2
    found_models, found_seeds = discover_runs(args.output_root)
    models = args.models or found_models
    if args.seeds:
        seeds = args.seeds
    elif args.models:
        seeds = sorted({s for m in models for s in model_seeds(args.output_root, m)})
    else:
        seeds = found_seeds
    if not models or not seeds:
        print(
            f"streamguard: error: no <model>/seed_<n>/predictions.jsonl under {args.output_root}",
            file=sys.stderr,
        )
        return 2
    try:
        evaluation = compare_runs(
            args.output_root,
            models,
            seeds,
            target_precision=args.target_precision,
            n_boot=args.bootstrap,
            seed=args.bootstrap_seed,
            out_dir=args.out,
        )
    except ComparisonError as exc:
        print(f"streamguard: error: {exc}", file=sys.stderr)
        return 2
    print(comparison_text(evaluation))
    return 0
