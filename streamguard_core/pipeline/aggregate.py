"""Aggregate a production run's seeds into per-model statistics and a pass/fail verdict.

Reads what every seed run left in ``<output_root>/<model>/seed_<n>/`` (``run_status.json``,
``metrics.json``, ``training_metadata.json``, ``collapse_report.json``) and writes::

    <output_root>/<model>/production_summary.json               one model over its seeds
    <output_root>/production_summary/production_summary.json   every model + the verdict

A seed that never started (no directory, or no ``run_status.json``) counts as failed; nothing
here raises on a missing or unreadable seed file.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamguard_core.io import atomic_write_json
from streamguard_core.config import SuccessCriteria

METRICS = ("accuracy", "precision", "recall", "f1", "macro_f1", "roc_auc", "pr_auc", "mcc")
STATUSES = ("completed", "collapsed", "failed")
SUMMARY_DIR = "production_summary"
SUMMARY_FILE = "production_summary.json"
_SEED_DIR = re.compile(r"^seed_(-?\d+)$")


def summarize_values(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample std (ddof=1) and Student-t 95% confidence interval of ``values``.

    ``None`` and non-finite values are skipped. One value gives std 0.0 and a CI equal to the
    mean; no values give ``None`` everywhere with ``n`` 0.

    Returns:
        ``{"mean", "std", "ci95_low", "ci95_high", "n"}``.
    """
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(kept)
    if n == 0:
        return {"mean": None, "std": None, "ci95_low": None, "ci95_high": None, "n": 0}
    mean = sum(kept) / n
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci95_low": mean, "ci95_high": mean, "n": 1}
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


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The parsed file and None, or None and why it could not be read."""
    if not path.is_file():
        return None, f"no {path.name}"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as exc:
        return None, f"unreadable {path.name}: {exc}"


def _seed_dirs(model_dir: Path, seeds: list[int] | None) -> list[tuple[int, Path]]:
    """(seed, directory) pairs: exactly ``seeds`` when given, else every ``seed_<n>`` found."""
    if seeds is not None:
        return [(int(s), model_dir / f"seed_{int(s)}") for s in seeds]
    found: list[tuple[int, Path]] = []
    if model_dir.is_dir():
        for child in model_dir.iterdir():
            match = _SEED_DIR.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
    return sorted(found)


def _seed_row(seed: int, seed_dir: Path, split: str) -> tuple[dict[str, Any], Any]:
    """One seed's summary row and its collapse report (None unless collapsed)."""
    row: dict[str, Any] = {
        "seed": seed,
        "status": "failed",
        "split": None,
        **dict.fromkeys(METRICS),
        "threshold": None,
        "confusion_matrix": None,
        "best_epoch": None,
        "epochs_run": None,
        "wall_s": None,
        "error": None,
        "cost": None,
        "backend": None,
        "device": None,
        "seed_dir": str(seed_dir),
        "run_dir": str(seed_dir),
        "model_dir": None,
    }
    status, problem = _read_json(seed_dir / "run_status.json")
    if not isinstance(status, dict):
        row["error"] = problem or "run_status.json is not a JSON object"
        return row, None
    row["status"] = status.get("status") if status.get("status") in STATUSES else "failed"
    if row["status"] == "failed" and status.get("status") not in STATUSES:
        row["error"] = f"unknown status {status.get('status')!r} in run_status.json"
    row["error"] = status.get("error") or row["error"]
    row["wall_s"] = status.get("wall_s")
    row["backend"] = status.get("backend")
    row["device"] = status.get("device")
    row["run_dir"] = status.get("run_dir") or str(seed_dir)
    row["cost"] = status.get("cost") if isinstance(status.get("cost"), dict) else None
    if (seed_dir / "model").is_dir():
        row["model_dir"] = str(seed_dir / "model")

    metadata, _ = _read_json(seed_dir / "training_metadata.json")
    if isinstance(metadata, dict):
        history = metadata.get("history")
        row["epochs_run"] = len(history) if isinstance(history, list) else None
        row["best_epoch"] = metadata.get("best_epoch")

    collapse = None
    if row["status"] == "collapsed":
        collapse, problem = _read_json(seed_dir / "collapse_report.json")
        if not isinstance(collapse, dict):
            collapse = {"reason": "unknown", "detail": problem or row["error"] or ""}
    elif row["status"] == "completed":
        metrics, problem = _read_json(seed_dir / "metrics.json")
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
            row["confusion_matrix"] = chosen.get("confusion_matrix")
    if row["status"] == "failed" and not row["error"]:
        row["error"] = "failed (no error recorded in run_status.json)"
    return row, collapse


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
    output_root: str | Path, model: str, seeds: list[int] | None = None, split: str = "test"
) -> dict[str, Any]:
    """Summarise one model's seed runs and write ``<root>/<model>/production_summary.json``.

    Args:
        output_root: the production run's output root.
        model: the model directory name (transformer, gnn, baseline).
        seeds: exactly these seeds (a missing one counts as failed); None = every ``seed_*``.
        split: metrics split to aggregate; a seed without it falls back to ``valid`` (the split
            used is recorded per seed).

    Returns:
        The summary written: counts, ``metrics`` (mean/std/CI per metric over completed seeds),
        per-seed rows, collapse events and the summed cost (None when no seed reports one).
    """
    model_dir = Path(output_root) / model
    rows: list[dict[str, Any]] = []
    collapse_events: list[dict[str, Any]] = []
    for seed, seed_dir in _seed_dirs(model_dir, seeds):
        row, collapse = _seed_row(seed, seed_dir, split)
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
        "split": split,
        "n_seeds": len(rows),
        "n_completed": len(completed),
        "n_collapsed": sum(row["status"] == "collapsed" for row in rows),
        "n_failed": sum(row["status"] == "failed" for row in rows),
        "metrics": {name: summarize_values([row[name] for row in completed]) for name in METRICS},
        "seeds": rows,
        "collapse_events": collapse_events,
        "cost": _cost_total(rows),
    }
    atomic_write_json(model_dir / SUMMARY_FILE, summary)
    return summary


def _best_model(models: dict[str, dict[str, Any]]) -> str | None:
    """The model with completed seeds and the highest mean F1 (first listed wins a tie)."""
    best, best_f1 = None, -math.inf
    for name, summary in models.items():
        mean_f1 = summary["metrics"]["f1"]["mean"]
        if summary["n_completed"] and mean_f1 is not None and mean_f1 > best_f1:
            best, best_f1 = name, mean_f1
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


def evaluate_criteria(
    models: dict[str, dict[str, Any]], best_model: str | None, criteria: SuccessCriteria
) -> dict[str, Any]:
    """Check the success criteria: F1 checks on the best model, run checks on every model.

    A check that the criteria switch off is reported with ``"passed": True, "skipped": True``.

    Returns:
        ``{"checks": [{"name", "passed", "value", "threshold", ...}], "passed": bool}``.
    """
    best_f1 = models[best_model]["metrics"]["f1"] if best_model else None
    mean_f1 = best_f1["mean"] if best_f1 else None
    std_f1 = best_f1["std"] if best_f1 else None
    counts = {
        "total": sum(s["n_seeds"] for s in models.values()),
        "completed": sum(s["n_completed"] for s in models.values()),
        "collapsed": sum(s["n_collapsed"] for s in models.values()),
        "failed": sum(s["n_failed"] for s in models.values()),
    }
    all_completed: dict[str, Any] = {
        "name": "all_seeds_completed",
        "passed": counts["completed"] == counts["total"],
        "value": counts,
        "threshold": counts["total"],
    }
    no_collapse: dict[str, Any] = {
        "name": "no_collapse",
        "passed": counts["collapsed"] == 0,
        "value": counts["collapsed"],
        "threshold": 0,
    }
    if not criteria.require_all_seeds:
        all_completed.update(passed=True, skipped=True)
    if not criteria.require_no_collapse:
        no_collapse.update(passed=True, skipped=True)
    checks: list[dict[str, Any]] = [
        {
            "name": "mean_f1_above_threshold",
            "passed": mean_f1 is not None and mean_f1 >= criteria.min_mean_f1,
            "value": mean_f1,
            "threshold": criteria.min_mean_f1,
        },
        {
            # one seed gives std 0.0: the check cannot see spread it has no data for
            "name": "f1_std_below",
            "passed": std_f1 is not None and std_f1 <= criteria.max_f1_std,
            "value": std_f1,
            "threshold": criteria.max_f1_std,
        },
        all_completed,
        no_collapse,
    ]
    return {"checks": checks, "passed": all(check["passed"] for check in checks)}


def aggregate_all(
    output_root: str | Path,
    models: list[str],
    criteria: SuccessCriteria,
    seeds: list[int] | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Aggregate every model, pick the best one and judge the run against ``criteria``.

    Writes ``<root>/production_summary/production_summary.json`` (and each model's own summary).

    Returns:
        ``{"generated_at", "output_root", "split", "models", "best_overall_model",
        "best_overall_f1", "best_seed", "criteria", "success"}``; ``best_overall_model`` is None
        when no model completed a seed.
    """
    root = Path(output_root)
    summaries = {model: aggregate_model(root, model, seeds=seeds, split=split) for model in models}
    best = _best_model(summaries)
    summary: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(),
        "output_root": str(root),
        "split": split,
        "models": summaries,
        "best_overall_model": best,
        "best_overall_f1": summaries[best]["metrics"]["f1"]["mean"] if best else None,
        "best_seed": _best_seed(summaries[best]) if best else None,
        "criteria": criteria.model_dump(),
        "success": evaluate_criteria(summaries, best, criteria),
    }
    atomic_write_json(root / SUMMARY_DIR / SUMMARY_FILE, summary)
    return summary
