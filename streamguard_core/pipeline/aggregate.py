"""Aggregate a production run's seeds into per-model statistics and a pass/fail verdict.

Reads what every seed run left in ``<output_root>/<model>/seed_<n>/`` (the files named by
:class:`~streamguard_core.training.paths.RunPaths`: ``run_status.json``, ``metrics.json``,
``predictions.jsonl``, ``training_metadata.json``, ``collapse_report.json``) and writes::

    <output_root>/<model>/production_summary.json               one model over its seeds
    <output_root>/production_summary/production_summary.json   every model + the verdict

A seed that never started (no directory, or no ``run_status.json``) counts as failed; nothing
here raises on a missing or unreadable seed file.

The verdict is per model: every neural model of the plan is judged on its own mean F1, its F1
spread across seeds and (``beat_trivial``) against the trivial predictors on the items its seeds
were scored on: "vulnerable" for every function (F1 ``2p / (1 + p)`` at vulnerable rate ``p``)
and the majority class (accuracy ``max(p, 1 - p)``). The baseline is reported beside them as the
reference and is judged only when the plan has no neural model.

Every metric's statistics carry their own trivial reference (``"trivial"``, see
:data:`TRIVIAL_REFERENCE`), e.g. majority accuracy beside ``accuracy`` and ``accuracy_at_half``
and 0.5 beside ``roc_auc``; they are reported, not judged. Each model also records the threshold
objective its seeds were tuned for (``threshold_objective``) and any seed whose threshold missed
it (``threshold_notes``, e.g. a target precision no threshold reached).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamguard_core.config import NEURAL_KINDS, SuccessCriteria, TrainingPlan, seed_dir
from streamguard_core.io import atomic_write_json, read_jsonl, sha256_text
from streamguard_core.training.paths import RunPaths

METRICS = (
    "accuracy",
    "accuracy_at_half",
    "precision",
    "recall",
    "f1",
    "macro_f1",
    "roc_auc",
    "pr_auc",
    "mcc",
)
STATUSES = ("completed", "collapsed", "failed")
SUMMARY_DIR = "production_summary"
SUMMARY_FILE = "production_summary.json"
_SEED_DIR = re.compile(r"^seed_(-?\d+)$")


def summarize_values(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample std (ddof=1) and Student-t 95% confidence interval of ``values``.

    ``None`` and non-finite values are skipped. One value has no spread: its std and CI are
    None ("n/a"), not a zero-width interval. No values give ``None`` everywhere with ``n`` 0.

    Returns:
        ``{"mean", "std", "ci95_low", "ci95_high", "n"}``.
    """
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(kept)
    if n == 0:
        return {"mean": None, "std": None, "ci95_low": None, "ci95_high": None, "n": 0}
    mean = sum(kept) / n
    if n == 1:
        return {"mean": mean, "std": None, "ci95_low": None, "ci95_high": None, "n": 1}
    from scipy import stats

    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    half_width = float(stats.t.ppf(0.975, df=n - 1)) * std / math.sqrt(n)
    return {
        "mean": mean,
        "std": std,
        "ci95_low": mean - half_width,
        "ci95_high": mean + half_width,
        "n": n,
    }


def all_vulnerable_f1(vulnerable_rate: float) -> float:
    """F1 of the vulnerable class when every function is predicted vulnerable: ``2p / (1 + p)``."""
    return 2 * vulnerable_rate / (1 + vulnerable_rate)


def majority_accuracy(vulnerable_rate: float) -> float:
    """Accuracy of always predicting the more frequent class: ``max(p, 1 - p)``."""
    return max(vulnerable_rate, 1 - vulnerable_rate)


def constant_macro_f1(vulnerable_rate: float) -> float:
    """Macro F1 of the better constant predictor: ``max(p / (1 + p), (1 - p) / (2 - p))``."""
    p = vulnerable_rate
    return max(p / (1 + p), (1 - p) / (2 - p))


# The trivial reference of each metric as a function of the vulnerable rate p of the scored
# items: the best a predictor that ignores its input can do (a constant for accuracy, F1,
# precision and macro F1; a random or constant score for ROC-AUC, PR-AUC and MCC). Recall has
# none worth showing: "vulnerable" for every function reaches 1.0.
TRIVIAL_REFERENCE: dict[str, Callable[[float], float] | None] = {
    "accuracy": majority_accuracy,
    "accuracy_at_half": majority_accuracy,
    "precision": lambda p: p,
    "recall": None,
    "f1": all_vulnerable_f1,
    "macro_f1": constant_macro_f1,
    "roc_auc": lambda p: 0.5,
    "pr_auc": lambda p: p,
    "mcc": lambda p: 0.0,
}


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The parsed file and None, or None and why it could not be read."""
    if not path.is_file():
        return None, f"no {path.name}"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as exc:
        return None, f"unreadable {path.name}: {exc}"


def _seed_dirs(output_root: Path, model: str, seeds: list[int] | None) -> list[tuple[int, Path]]:
    """(seed, directory) pairs: exactly ``seeds`` when given, else every ``seed_<n>`` found."""
    if seeds is not None:
        return [(int(s), seed_dir(output_root, model, int(s))) for s in seeds]
    found: list[tuple[int, Path]] = []
    model_dir = output_root / model
    if model_dir.is_dir():
        for child in model_dir.iterdir():
            match = _SEED_DIR.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
    return sorted(found)


def _scored_labels(paths: RunPaths, metrics: dict[str, Any], used: str) -> dict[str, Any]:
    """How many items a seed was scored on at split ``used``, how many vulnerable, and from where.

    ``predictions.jsonl`` holds the test split when the run has one, else valid (see
    :class:`RunPaths`); it is read when that is the split used, and its (id, label) pairs are
    hashed so seeds can be compared item by item. Otherwise the split's confusion matrix gives
    the counts.
    """
    none = {"n_items": None, "n_vulnerable": None, "labels_from": None, "items_sha256": None}
    predictions_split = "test" if isinstance(metrics.get("test"), dict) else "valid"
    if used == predictions_split:
        try:
            items = sorted((str(r["id"]), int(r["label"])) for r in read_jsonl(paths.predictions))
        except (OSError, ValueError, KeyError, TypeError):
            items = []
        if items:
            return {
                "n_items": len(items),
                "n_vulnerable": sum(label == 1 for _, label in items),
                "labels_from": "predictions.jsonl",
                "items_sha256": sha256_text(json.dumps(items)),
            }
    try:
        (tn, fp), (fn, tp) = metrics[used]["confusion_matrix"]
        n_items, n_vulnerable = int(tn) + int(fp) + int(fn) + int(tp), int(fn) + int(tp)
    except (KeyError, TypeError, ValueError):
        return none
    if n_items <= 0:
        return none
    return {
        "n_items": n_items,
        "n_vulnerable": n_vulnerable,
        "labels_from": "confusion_matrix",
        "items_sha256": None,
    }


def _seed_row(seed: int, run_dir: Path, split: str) -> tuple[dict[str, Any], Any]:
    """One seed's summary row and its collapse report (None unless collapsed)."""
    paths = RunPaths(run_dir)
    row: dict[str, Any] = {
        "seed": seed,
        "status": "failed",
        "split": None,
        **dict.fromkeys(METRICS),
        "threshold": None,
        "threshold_objective": None,
        "threshold_note": None,
        "confusion_matrix": None,
        "n_items": None,
        "n_vulnerable": None,
        "labels_from": None,
        "items_sha256": None,
        "best_epoch": None,
        "epochs_run": None,
        "wall_s": None,
        "error": None,
        "cost": None,
        "backend": None,
        "device": None,
        "seed_dir": str(run_dir),
        "run_dir": str(run_dir),
        "model_dir": None,
    }
    status, problem = _read_json(paths.status)
    if not isinstance(status, dict):
        row["error"] = problem or f"{paths.status.name} is not a JSON object"
        return row, None
    row["status"] = status.get("status") if status.get("status") in STATUSES else "failed"
    if row["status"] == "failed" and status.get("status") not in STATUSES:
        row["error"] = f"unknown status {status.get('status')!r} in {paths.status.name}"
    row["error"] = status.get("error") or row["error"]
    row["wall_s"] = status.get("wall_s")
    row["backend"] = status.get("backend")
    row["device"] = status.get("device")
    row["run_dir"] = status.get("run_dir") or str(run_dir)
    row["cost"] = status.get("cost") if isinstance(status.get("cost"), dict) else None
    if paths.model.is_dir():
        row["model_dir"] = str(paths.model)

    metadata, _ = _read_json(paths.metadata)
    if isinstance(metadata, dict):
        history = metadata.get("history")
        row["epochs_run"] = len(history) if isinstance(history, list) else None
        row["best_epoch"] = metadata.get("best_epoch")

    collapse = None
    if row["status"] == "collapsed":
        collapse, problem = _read_json(paths.collapse_report)
        if not isinstance(collapse, dict):
            collapse = {"reason": "unknown", "detail": problem or row["error"] or ""}
    elif row["status"] == "completed":
        metrics, problem = _read_json(paths.metrics)
        used = None
        if isinstance(metrics, dict):
            # no test split in the data: the run only has validation metrics
            used = split if isinstance(metrics.get(split), dict) else None
            if used is None and isinstance(metrics.get("valid"), dict):
                used = "valid"
        if used is None:
            # a "completed" run without usable metrics did not deliver: count it as failed
            row["status"] = "failed"
            row["error"] = f"completed but {problem or f'metrics.json has no {split!r} or valid'}"
        else:
            chosen = metrics[used]
            row["split"] = used
            row.update({name: chosen.get(name) for name in METRICS})
            row["threshold"] = chosen.get("threshold")
            # valid always records how its threshold was tuned (a test split may not)
            tuned = chosen if "threshold_objective" in chosen else metrics.get("valid") or {}
            row["threshold_objective"] = tuned.get("threshold_objective")
            row["threshold_note"] = tuned.get("threshold_note")
            row["confusion_matrix"] = chosen.get("confusion_matrix")
            row.update(_scored_labels(paths, metrics, used))
    if row["status"] == "failed" and not row["error"]:
        row["error"] = f"failed (no error recorded in {paths.status.name})"
    return row, collapse


def trivial_references(rows: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """All-vulnerable F1 and majority-class accuracy on the items the completed seeds scored.

    All seeds of a model normally score the same items, and the references are those of that
    item set. When they differ (another split, other items), each seed's references are averaged
    (as its metrics are) and ``note`` says so; ``same_items`` is then False.

    Returns:
        ``{"all_vulnerable_f1", "majority_accuracy", "split", "vulnerable_rate", "n_items",
        "labels_from", "same_items", "note"}`` (None values when no seed recorded labels).
    """
    completed = [r for r in rows if r["status"] == "completed"]
    scored = [r for r in completed if r["n_items"]]
    result: dict[str, Any] = {
        "all_vulnerable_f1": None,
        "majority_accuracy": None,
        "split": split,
        "vulnerable_rate": None,
        "n_items": None,
        "labels_from": None,
        "same_items": None,
        "note": None,
    }
    if not scored:
        if completed:
            result["note"] = "no completed seed recorded its labels (predictions or counts)"
        return result
    hashed = all(r["items_sha256"] for r in scored)
    item_sets = {
        (r["split"], r["n_items"], r["n_vulnerable"], r["items_sha256"] if hashed else None)
        for r in scored
    }
    same = len(item_sets) == 1
    rates = [r["n_vulnerable"] / r["n_items"] for r in scored]
    notes = []
    if not same:
        described = ", ".join(
            f"seed {r['seed']}: {r['n_vulnerable']}/{r['n_items']} vulnerable on {r['split']}"
            for r in scored
        )
        notes.append(
            f"the seeds were scored on different items ({described}); the references are the "
            "mean of each seed's"
        )
    if len(scored) < len(completed):
        missing = ", ".join(str(r["seed"]) for r in completed if not r["n_items"])
        notes.append(f"seed(s) {missing} recorded no labels and are left out of the references")
    result.update(
        all_vulnerable_f1=sum(all_vulnerable_f1(p) for p in rates) / len(rates),
        majority_accuracy=sum(majority_accuracy(p) for p in rates) / len(rates),
        split=", ".join(sorted({str(r["split"]) for r in scored})),
        vulnerable_rate=sum(rates) / len(rates),
        n_items=scored[0]["n_items"] if same else None,
        labels_from=", ".join(sorted({str(r["labels_from"]) for r in scored})),
        same_items=same,
        note="; ".join(notes) or None,
    )
    return result


def metric_references(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each metric's trivial reference (:data:`TRIVIAL_REFERENCE`) on the items the completed
    seeds scored; seeds scored on different items are averaged, as in
    :func:`trivial_references`. None for recall, and for every metric when no seed recorded its
    labels."""
    rates = [
        r["n_vulnerable"] / r["n_items"]
        for r in rows
        if r["status"] == "completed" and r["n_items"] and r["n_vulnerable"] is not None
    ]
    references: dict[str, float | None] = {}
    for name in METRICS:
        reference = TRIVIAL_REFERENCE[name]
        references[name] = (
            sum(reference(p) for p in rates) / len(rates) if reference and rates else None
        )
    return references


def _threshold_objective(completed: list[dict[str, Any]]) -> str | None:
    """The threshold objective(s) the completed seeds were tuned for (None: not recorded)."""
    found = sorted({str(r["threshold_objective"]) for r in completed if r["threshold_objective"]})
    return ", ".join(found) or None


def _cost_total(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """Summed cost of the seeds that report one; None when none does."""
    costs = [row["cost"] for row in rows if row["cost"]]
    if not costs:
        return None
    return {
        "total_usd": sum(float(c.get("cost_usd") or 0.0) for c in costs),
        "training_time_s": sum(float(c.get("training_time_s") or 0.0) for c in costs),
        "billable_time_s": sum(float(c.get("billable_time_s") or 0.0) for c in costs),
    }


def aggregate_model(
    output_root: str | Path,
    model: str,
    seeds: list[int] | None = None,
    split: str = "test",
    kind: str | None = None,
) -> dict[str, Any]:
    """Summarise one model's seed runs and write ``<root>/<model>/production_summary.json``.

    Args:
        output_root: the production run's output root.
        model: the model's run name (its directory under the output root).
        seeds: exactly these seeds (a missing one counts as failed); None = every ``seed_*``.
        split: metrics split to aggregate; a seed without it falls back to ``valid`` (the split
            used is recorded per seed).
        kind: the model kind (transformer, gnn, baseline), recorded in the summary.

    Returns:
        The summary written: counts, ``metrics`` (mean/std/CI per metric over completed seeds,
        with its trivial reference under ``"trivial"``, see :func:`metric_references`),
        ``trivial`` (the references of :func:`trivial_references`), ``threshold_objective``
        and ``threshold_notes`` (how the seeds' thresholds were tuned, and where that fell
        short), per-seed rows, collapse events and the summed cost (None when no seed reports
        one).
    """
    root = Path(output_root)
    rows: list[dict[str, Any]] = []
    collapse_events: list[dict[str, Any]] = []
    for seed, run_dir in _seed_dirs(root, model, seeds):
        row, collapse = _seed_row(seed, run_dir, split)
        rows.append(row)
        if collapse is not None:
            collapse_events.append(
                {
                    "seed": seed,
                    "reason": collapse.get("reason"),
                    "detail": collapse.get("detail"),
                    "epoch": collapse.get("epoch"),
                    "step": collapse.get("step"),
                }
            )
    completed = [row for row in rows if row["status"] == "completed"]
    summary: dict[str, Any] = {
        "model": model,
        "kind": kind,
        "split": split,
        "n_seeds": len(rows),
        "n_completed": len(completed),
        "n_collapsed": sum(row["status"] == "collapsed" for row in rows),
        "n_failed": sum(row["status"] == "failed" for row in rows),
        "metrics": {
            name: {**summarize_values([row[name] for row in completed]), "trivial": reference}
            for name, reference in metric_references(rows).items()
        },
        "trivial": trivial_references(rows, split),
        "threshold_objective": _threshold_objective(completed),
        "threshold_notes": [
            f"seed {row['seed']}: {row['threshold_note']}"
            for row in completed
            if row["threshold_note"]
        ],
        "seeds": rows,
        "collapse_events": collapse_events,
        "cost": _cost_total(rows),
    }
    atomic_write_json(root / model / SUMMARY_FILE, summary)
    return summary


# what picks the best model, per threshold objective: the objective's own metric (ROC-AUC for
# "precision": recall at a fixed precision is not comparable across models that miss it)
SELECTION_BY_OBJECTIVE = {"f1": "f1", "accuracy": "accuracy", "precision": "roc_auc"}


def _best_model(models: dict[str, dict[str, Any]], metric: str = "f1") -> str | None:
    """The model with completed seeds and the highest mean ``metric`` (first listed wins a
    tie)."""
    best, best_value = None, -math.inf
    for name, summary in models.items():
        value = summary["metrics"][metric]["mean"]
        if summary["n_completed"] and value is not None and value > best_value:
            best, best_value = name, value
    return best


def _best_seed(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The completed seed of a model with the highest F1, with where its run lives."""
    candidates = [r for r in summary["seeds"] if r["status"] == "completed" and r["f1"] is not None]
    if not candidates:
        return None
    row = max(candidates, key=lambda r: r["f1"])
    return {
        "model": summary["model"],
        "seed": row["seed"],
        "f1": row["f1"],
        "split": row["split"],
        "run_dir": row["run_dir"],
        "seed_dir": row["seed_dir"],
        "model_dir": row["model_dir"],
    }


# --------------------------------------------------------------------------- criteria


def _check(
    name: str,
    model: str | None,
    passed: bool,
    value: Any,
    threshold: Any,
    detail: str,
    skipped: bool = False,
) -> dict[str, Any]:
    """One check of the verdict; a switched-off check passes and says why in its detail."""
    return {
        "name": f"{name}:{model}" if model else name,
        "model": model,
        "passed": True if skipped else passed,
        "skipped": skipped,
        "value": value,
        "threshold": threshold,
        "detail": detail,
    }


def _seeds_phrase(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _model_checks(
    name: str, summary: dict[str, Any], criteria: SuccessCriteria, why_judged: str
) -> list[dict[str, Any]]:
    """The F1, spread and trivial-reference checks of one judged model."""
    f1 = summary["metrics"]["f1"]
    trivial = summary.get("trivial") or {}
    mean, std, n = f1["mean"], f1["std"], f1["n"]
    no_seed = "no completed seed: nothing to judge"
    checks = []

    if mean is None:
        detail = no_seed
    else:
        op = ">=" if mean >= criteria.min_mean_f1 else "<"
        detail = f"mean F1 {mean:.4f} over {_seeds_phrase(n)} {op} {criteria.min_mean_f1:.4f}"
    checks.append(
        _check(
            "mean_f1",
            name,
            mean is not None and mean >= criteria.min_mean_f1,
            mean,
            criteria.min_mean_f1,
            detail + why_judged,
        )
    )

    if criteria.max_f1_std is None:
        checks.append(
            _check("f1_std", name, True, std, None, "switched off (max_f1_std is empty)", True)
        )
    else:
        if n == 0:
            detail = "no completed seed: std n/a"
        elif std is None:
            detail = "one seed: std n/a (a spread needs two or more completed seeds)"
        else:
            op = "<=" if std <= criteria.max_f1_std else ">"
            detail = f"F1 std {std:.4f} over {_seeds_phrase(n)} {op} {criteria.max_f1_std:.4f}"
        checks.append(
            _check(
                "f1_std",
                name,
                std is not None and std <= criteria.max_f1_std,
                std,
                criteria.max_f1_std,
                detail,
            )
        )

    off = not criteria.beat_trivial
    where = (
        f"{trivial['vulnerable_rate']:.1%} vulnerable on {trivial['split']}"
        if trivial.get("vulnerable_rate") is not None
        else ""
    )
    metrics = summary["metrics"]
    # check name, label and what the reference is; its value is the metric's own "trivial"
    # (TRIVIAL_REFERENCE on the items the seeds were scored on)
    described = {
        "f1": ("beats_all_vulnerable_f1", "mean F1",
               "the F1 of predicting 'vulnerable' for every function"),
        "accuracy": ("beats_majority_accuracy", "mean accuracy",
                     "the accuracy of predicting the majority class for every function"),
        "accuracy_at_half": ("beats_majority_accuracy_at_half", "mean accuracy at 0.5",
                             "the accuracy of predicting the majority class for every function"),
        "roc_auc": ("beats_chance_roc_auc", "mean ROC-AUC", "the ROC-AUC of a constant score"),
    }  # fmt: skip
    for metric in criteria.trivial_metrics:
        check_name, label, what = described[metric]
        ours, reference = (metrics[metric].get(k) for k in ("mean", "trivial"))
        if ours is None:
            detail = no_seed
        elif reference is None:
            detail = f"no trivial reference: {trivial.get('note') or 'no labels recorded'}"
        else:
            op = ">" if ours > reference else "<="
            detail = f"{label} {ours:.4f} {op} {reference:.4f}, {what} ({where})"
        if off:
            detail = f"switched off (beat_trivial is false): {detail}"
        checks.append(
            _check(
                check_name,
                name,
                ours is not None and reference is not None and ours > reference,
                ours,
                reference,
                detail,
                off,
            )
        )
    return checks


def _run_checks(
    models: dict[str, dict[str, Any]], criteria: SuccessCriteria
) -> list[dict[str, Any]]:
    """The run-level checks over every model's seeds: all completed, none collapsed."""
    counts = {
        "total": sum(s["n_seeds"] for s in models.values()),
        "completed": sum(s["n_completed"] for s in models.values()),
        "collapsed": sum(s["n_collapsed"] for s in models.values()),
        "failed": sum(s["n_failed"] for s in models.values()),
    }
    unfinished = [
        f"{name} seed {row['seed']} {row['status']}"
        for name, summary in models.items()
        for row in summary["seeds"]
        if row["status"] != "completed"
    ]
    completed_detail = f"{counts['completed']} of {counts['total']} runs completed"
    if unfinished:
        completed_detail += f" ({', '.join(unfinished)})"
    collapses = [
        f"{name} seed {event['seed']} ({event.get('reason')})"
        for name, summary in models.items()
        for event in summary["collapse_events"]
    ]
    collapse_detail = (
        f"{len(collapses)} run(s) collapsed: {', '.join(collapses)}"
        if collapses
        else "no run collapsed"
    )
    return [
        _check(
            "all_seeds_completed",
            None,
            counts["completed"] == counts["total"],
            counts,
            counts["total"],
            completed_detail
            if criteria.require_all_seeds
            else f"switched off (require_all_seeds is false): {completed_detail}",
            not criteria.require_all_seeds,
        ),
        _check(
            "no_collapse",
            None,
            counts["collapsed"] == 0,
            counts["collapsed"],
            0,
            collapse_detail
            if criteria.require_no_collapse
            else f"switched off (require_no_collapse is false): {collapse_detail}",
            not criteria.require_no_collapse,
        ),
    ]


def evaluate_criteria(
    models: dict[str, dict[str, Any]], criteria: SuccessCriteria
) -> dict[str, Any]:
    """Judge a run: per-model checks on every neural model, run-level checks on every run.

    The checks of a model are ``mean_f1:<name>``, ``f1_std:<name>``,
    ``beats_all_vulnerable_f1:<name>`` and ``beats_majority_accuracy:<name>``; the run-level ones
    are ``all_seeds_completed`` and ``no_collapse`` (``model`` None). Only models whose ``kind``
    is neural are judged (the baseline is the reference); when none is, every model is, and
    their details say so. A check the criteria switch off passes with ``"skipped": True``.

    Args:
        models: per-model summaries from :func:`aggregate_model` (with their ``kind``).
        criteria: the success criteria.

    Returns:
        ``{"checks": [{"name", "model", "passed", "skipped", "value", "threshold", "detail"}],
        "passed": bool, "judged_models": [name, ...]}``.
    """
    judged = [name for name, s in models.items() if s.get("kind") in (*NEURAL_KINDS, "fusion")]
    why_judged = ""
    if not judged:
        judged = list(models)
        why_judged = " (no neural model in the plan: every model is judged)"
    checks = [
        check
        for name in judged
        for check in _model_checks(name, models[name], criteria, why_judged)
    ]
    checks += _run_checks(models, criteria)
    return {
        "checks": checks,
        "passed": all(check["passed"] for check in checks),
        "judged_models": judged,
    }


def failed_check_lines(success: dict[str, Any]) -> list[str]:
    """One human line per failed check (``name: detail``), e.g. for a failed flow's message."""
    return [
        f"{check['name']}: {check['detail']}"
        for check in success.get("checks", [])
        if not check["passed"]
    ]


def aggregate_all(
    output_root: str | Path,
    plan: TrainingPlan,
    criteria: SuccessCriteria,
    split: str = "test",
) -> dict[str, Any]:
    """Aggregate every model of ``plan`` over its seeds, pick the best one and judge the run.

    Writes ``<root>/production_summary/production_summary.json`` (and each model's own summary).

    Args:
        output_root: the production run's output root (``<root>/<name>/seed_<n>/`` per run).
        plan: the plan that was trained: model names and kinds, and the seeds expected.
        criteria: the success criteria (see :func:`evaluate_criteria`).
        split: metrics split to aggregate (a seed without it is scored on valid).

    Returns:
        ``{"generated_at", "output_root", "split", "models", "best_overall_model",
        "best_overall_f1", "best_seed", "criteria", "success"}``; ``best_overall_model`` is None
        when no model completed a seed.
    """
    root = Path(output_root)
    summaries = {
        model.run_name: aggregate_model(
            root, model.run_name, seeds=list(plan.seeds), split=split, kind=model.kind
        )
        for model in plan.all_models()
    }
    selection = SELECTION_BY_OBJECTIVE[plan.train.threshold_objective]
    best = _best_model(summaries, selection)
    summary: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(),
        "output_root": str(root),
        "split": split,
        "models": summaries,
        "best_overall_model": best,
        "best_overall_f1": summaries[best]["metrics"]["f1"]["mean"] if best else None,
        "best_overall_selected_by": selection,
        "best_overall_value": summaries[best]["metrics"][selection]["mean"] if best else None,
        "best_seed": _best_seed(summaries[best]) if best else None,
        "criteria": criteria.model_dump(),
        "success": evaluate_criteria(summaries, criteria),
    }
    atomic_write_json(root / SUMMARY_DIR / SUMMARY_FILE, summary)
    return summary
