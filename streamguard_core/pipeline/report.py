"""Turn a production summary (from :func:`aggregate_all`) into a markdown report with plots.

Writes, beside the summary JSON in ``<output_root>/production_summary/``::

    production_report.md    verdict and its checks, every model's row (mean ± 95% CI beside the
                            trivial references; accuracy at the tuned threshold and at 0.5; the
                            threshold objective), per-model statistics, per-seed table,
                            failures, cost
    training_curves.png     valid F1 and train loss per epoch (neural models with a history)
    confusion_matrix.png    best model's best seed, at the split its metrics came from
    pr_curve.png            precision-recall curve of every completed seed (predictions.jsonl)

A plot whose data is absent is not drawn (a stale one from an earlier report is removed) and
the markdown says why instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.config import NEURAL_KINDS, seed_dir
from streamguard_core.io import atomic_write_text, read_jsonl
from streamguard_core.pipeline.aggregate import SUMMARY_DIR
from streamguard_core.training.paths import RunPaths

REPORT_FILE = "production_report.md"
CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
PR_PNG = "pr_curve.png"
TABLE_METRICS = ("f1", "accuracy", "accuracy_at_half", "roc_auc", "pr_auc", "mcc")


def report_table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per model and seed (for a UI table): status, metrics, timing, cost, error."""
    rows: list[dict[str, Any]] = []
    for model, model_summary in summary.get("models", {}).items():
        for seed in model_summary.get("seeds", []):
            cost = seed.get("cost") or {}
            rows.append(
                {
                    "model": model,
                    "seed": seed.get("seed"),
                    "status": seed.get("status"),
                    "split": seed.get("split"),
                    "f1": seed.get("f1"),
                    "precision": seed.get("precision"),
                    "recall": seed.get("recall"),
                    "accuracy": seed.get("accuracy"),
                    "accuracy_at_half": seed.get("accuracy_at_half"),
                    "roc_auc": seed.get("roc_auc"),
                    "pr_auc": seed.get("pr_auc"),
                    "mcc": seed.get("mcc"),
                    "threshold": seed.get("threshold"),
                    "threshold_objective": seed.get("threshold_objective"),
                    "best_epoch": seed.get("best_epoch"),
                    "epochs_run": seed.get("epochs_run"),
                    "wall_s": seed.get("wall_s"),
                    "cost_usd": cost.get("cost_usd"),
                    "error": seed.get("error"),
                }
            )
    return rows


# --------------------------------------------------------------------------- plots


def _save_figure(fig: Any, path: Path) -> Path:
    """Save a figure as PNG through a temp file in the same directory, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _new_figure(width: float, height: float) -> Any:
    """A figure bound to no GUI backend (safe in workers and servers; no pyplot state).

    ``Figure`` renders PNGs through Agg on its own, so the process-wide backend is left alone.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _histories(summary: dict[str, Any], root: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, per-epoch history) of every neural seed that has a non-empty history."""
    found = []
    for model, model_summary in summary.get("models", {}).items():
        if model_summary.get("kind") not in NEURAL_KINDS:
            continue
        for seed in model_summary.get("seeds", []):
            path = RunPaths(seed_dir(root, model, seed["seed"])).metadata
            try:
                history = json.loads(path.read_text(encoding="utf-8")).get("history")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(history, list) and history:
                found.append((f"{model} seed {seed['seed']}", history))
    return found


def plot_training_curves(summary: dict[str, Any], root: Path, path: Path) -> Path | None:
    """Valid F1 and train loss per epoch, one line per neural model and seed; None if no data."""
    histories = _histories(summary, root)
    if not histories:
        return None
    fig = _new_figure(11, 4)
    ax_f1, ax_loss = fig.subplots(1, 2)
    for label, history in histories:
        epochs = [h.get("epoch", i) for i, h in enumerate(history)]
        f1 = [h.get("valid_f1") for h in history]
        loss = [h.get("train_loss") for h in history]
        ax_f1.plot(epochs, [np.nan if v is None else v for v in f1], marker="o", label=label)
        ax_loss.plot(epochs, [np.nan if v is None else v for v in loss], marker="o", label=label)
    from matplotlib.ticker import MaxNLocator

    ax_f1.set(title="Validation F1 (vulnerable class)", xlabel="epoch", ylabel="F1")
    ax_loss.set(title="Training loss", xlabel="epoch", ylabel="loss")
    for ax in (ax_f1, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_f1.legend(fontsize="small")
    return _save_figure(fig, path)


def plot_confusion_matrix(matrix: list[list[int]], title: str, path: Path) -> Path:
    """A 2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` with counts in the cells."""
    cm = np.asarray(matrix, dtype=np.int64)
    fig = _new_figure(4.5, 4)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        colour = "white" if count > cm.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["safe", "vulnerable"],
        yticklabels=["safe", "vulnerable"],
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    return _save_figure(fig, path)


def _pr_curves(summary: dict[str, Any], root: Path) -> list[tuple[str, str, Any, Any, float]]:
    """(model, label, recall, precision, AP) for every completed seed with two-class predictions."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    curves = []
    for model, model_summary in summary.get("models", {}).items():
        for seed in model_summary.get("seeds", []):
            if seed.get("status") != "completed":
                continue
            path = RunPaths(seed_dir(root, model, seed["seed"])).predictions
            try:
                rows = list(read_jsonl(path))
                labels = np.asarray([int(r["label"]) for r in rows])
                probs = np.asarray([float(r["probability"]) for r in rows])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if len(np.unique(labels)) < 2:
                continue  # a curve needs both classes
            precision, recall, _ = precision_recall_curve(labels, probs)
            ap = float(average_precision_score(labels, probs))
            curves.append((model, f"{model} seed {seed['seed']}", recall, precision, ap))
    return curves


def plot_pr_curves(summary: dict[str, Any], root: Path, path: Path) -> Path | None:
    """Precision-recall curves, one per model and seed, a colour per model; None if no data."""
    curves = _pr_curves(summary, root)
    if not curves:
        return None
    fig = _new_figure(6, 5)
    ax = fig.subplots()
    colours: dict[str, str] = {}
    for model, label, recall, precision, ap in curves:
        colour = colours.setdefault(model, f"C{len(colours)}")
        ax.step(recall, precision, where="post", color=colour, label=f"{label} (AP={ap:.3f})")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.05),
        title="Precision-recall (vulnerable class)",
    )
    ax.legend(fontsize="small")
    return _save_figure(fig, path)


# --------------------------------------------------------------------------- markdown


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(text: Any) -> str:
    """Markdown table cell text: no pipes or newlines that would break the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ci(stats: dict[str, Any], digits: int = 3) -> str:
    """``[low, high]``, or ``n/a`` when the interval is undefined (fewer than two seeds)."""
    if stats.get("ci95_low") is None or stats.get("ci95_high") is None:
        return "n/a"
    return f"[{_fmt(stats['ci95_low'], digits)}, {_fmt(stats['ci95_high'], digits)}]"


def _mean_ci(stats: dict[str, Any]) -> str:
    """``mean ± half-width of the 95% CI``; ``mean ± n/a`` with one seed, ``n/a`` with none."""
    if stats.get("mean") is None:
        return "n/a"
    if stats.get("ci95_low") is None or stats.get("ci95_high") is None:
        return f"{_fmt(stats['mean'])} ± n/a"
    return f"{_fmt(stats['mean'])} ± {_fmt((stats['ci95_high'] - stats['ci95_low']) / 2)}"


def _check_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return _fmt(value, 4)


def _verdict_lines(summary: dict[str, Any]) -> list[str]:
    success = summary.get("success") or {}
    checks = success.get("checks", [])
    lines = [f"## Verdict: {'PASSED' if success.get('passed') else 'FAILED'}", ""]
    failed = [check for check in checks if not check["passed"]]
    if failed:
        lines += ["Failed checks:", ""]
        lines += [f"- **{check['name']}**: {_cell(check.get('detail', ''))}" for check in failed]
        lines.append("")
    judged = success.get("judged_models")
    if judged:
        lines += [f"Judged models: {', '.join(judged)} (the others are shown as references).", ""]
    lines += [
        "| model | check | value | threshold | result | detail |",
        "|---|---|---|---|---|---|",
    ]
    for check in checks:
        result = "skipped" if check.get("skipped") else ("pass" if check["passed"] else "FAIL")
        lines.append(
            f"| {_cell(check.get('model') or 'run')} | {_cell(check['name'])} | "
            f"{_cell(_check_value(check.get('value')))} | {_cell(_fmt(check.get('threshold'), 4))}"
            f" | {result} | {_cell(check.get('detail', ''))} |"
        )
    lines.append("")
    best = summary.get("best_overall_model")
    if best:
        by, value = summary["best_overall_selected_by"], summary["best_overall_value"]
        lines.append(f"Best model: **{best}**, mean {by} {_fmt(value, 4)} (the selection metric).")
    else:
        lines.append("Best model: none (no model completed a seed).")
    return [*lines, ""]


def _overview_lines(summary: dict[str, Any]) -> list[str]:
    """Every model in one table: mean ± 95% CI half-width beside the trivial references."""
    judged = set((summary.get("success") or {}).get("judged_models") or [])
    columns = [
        "model", "kind", "judged", "seeds done", "split", "threshold objective", "F1",
        "all-vulnerable F1", "accuracy", "accuracy at 0.5", "majority accuracy", "F1 std",
        "ROC-AUC", "chance ROC-AUC",
    ]  # fmt: skip
    lines = [
        "Mean over completed seeds ± half-width of the Student-t 95% CI (n/a with one seed). "
        "F1 and accuracy are at the threshold tuned on valid for the threshold objective; "
        "accuracy at 0.5 is the CodeXGLUE convention. Trivial references on the same items: "
        "all-vulnerable F1 (predict 'vulnerable' for every function), majority-class accuracy "
        "(for both accuracies) and the ROC-AUC of chance.",
        "",
        "| " + " | ".join(columns) + " |",
        "|---" * len(columns) + "|",
    ]
    for model, model_summary in summary.get("models", {}).items():
        metrics = model_summary["metrics"]
        trivial = model_summary.get("trivial") or {}
        cells = [
            model,
            _fmt(model_summary.get("kind")),
            "yes" if model in judged else "reference",
            f"{model_summary['n_completed']}/{model_summary['n_seeds']}",
            _splits_used(model_summary),
            _fmt(model_summary.get("threshold_objective")),
            _mean_ci(metrics["f1"]),
            _fmt(trivial.get("all_vulnerable_f1")),
            _mean_ci(metrics["accuracy"]),
            _mean_ci(metrics.get("accuracy_at_half") or {}),
            _fmt(trivial.get("majority_accuracy")),
            _fmt(metrics["f1"]["std"]),
            _mean_ci(metrics["roc_auc"]),
            _fmt(metrics["roc_auc"].get("trivial")),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return [*lines, ""]


def _trivial_line(trivial: dict[str, Any]) -> str:
    """Where the trivial references come from, in one sentence."""
    if trivial.get("all_vulnerable_f1") is None:
        return f"Trivial references: n/a ({trivial.get('note') or 'no completed seed'})."
    items = f"{trivial['n_items']} items" if trivial.get("n_items") else "the seeds' items"
    line = (
        f"Trivial references on {items} of {trivial['split']} "
        f"({trivial['vulnerable_rate']:.1%} vulnerable, from {trivial['labels_from']}): "
        f"all-vulnerable F1 {_fmt(trivial['all_vulnerable_f1'])}, majority-class accuracy "
        f"{_fmt(trivial['majority_accuracy'])} (each metric's own reference is in the last "
        "column of the table below)."
    )
    if trivial.get("note"):
        line += f" Note: {trivial['note']}."
    return line


def _threshold_lines(model_summary: dict[str, Any]) -> list[str]:
    """How the model's thresholds were tuned, and every seed where that fell short."""
    objective = model_summary.get("threshold_objective")
    line = (
        f"Decision threshold tuned on valid for: {objective}."
        if objective
        else "Decision threshold objective: n/a (not recorded by the seeds' metrics)."
    )
    notes = model_summary.get("threshold_notes") or []
    return [line, *(f"- threshold warning, {_cell(note)}" for note in notes), ""]


def _model_lines(model: str, model_summary: dict[str, Any]) -> list[str]:
    lines = [
        f"### {model}",
        "",
        f"Kind: {_fmt(model_summary.get('kind'))}. "
        f"Seeds: {model_summary['n_seeds']} (completed {model_summary['n_completed']}, "
        f"collapsed {model_summary['n_collapsed']}, failed {model_summary['n_failed']}); "
        f"split: {_splits_used(model_summary)}.",
        "",
        *_threshold_lines(model_summary),
        _trivial_line(model_summary.get("trivial") or {}),
        "",
        "| metric | mean | std | 95% CI | n | trivial reference |",
        "|---|---|---|---|---|---|",
    ]
    for name in TABLE_METRICS:
        stats = model_summary["metrics"].get(name)
        if stats is None:  # a summary from before the metric existed
            continue
        lines.append(
            f"| {name} | {_fmt(stats['mean'])} | {_fmt(stats['std'])} | {_ci(stats)} "
            f"| {stats['n']} | {_fmt(stats.get('trivial'))} |"
        )
    has_cost = any(seed.get("cost") for seed in model_summary["seeds"])
    header = "| seed | status | split | threshold | f1 | accuracy | accuracy_at_half | roc_auc |"
    header += " wall_s |"
    if has_cost:
        header += " cost_usd |"
    lines += ["", header, "|---" * header.count(" |") + "|"]
    for seed in model_summary["seeds"]:
        row = (
            f"| {seed['seed']} | {seed['status']} | {_fmt(seed['split'])} | "
            f"{_fmt(seed.get('threshold'), 4)} | {_fmt(seed['f1'])} | {_fmt(seed['accuracy'])} | "
            f"{_fmt(seed.get('accuracy_at_half'))} | {_fmt(seed['roc_auc'])} | "
            f"{_fmt(seed['wall_s'], 1)} |"
        )
        if has_cost:
            cost = seed.get("cost") or {}
            row += f" {_fmt(cost.get('cost_usd'), 4)} |"
        lines.append(row)
    return [*lines, ""]


def _problem_lines(summary: dict[str, Any]) -> list[str]:
    lines = ["## Collapses and failures", ""]
    found = False
    for model, model_summary in summary.get("models", {}).items():
        for event in model_summary.get("collapse_events", []):
            found = True
            where = f"epoch {_fmt(event.get('epoch'))}, step {_fmt(event.get('step'))}"
            lines.append(
                f"- {model} seed {event['seed']} **collapsed** ({where}): "
                f"{_cell(event.get('reason'))}: {_cell(event.get('detail') or '')}"
            )
        for seed in model_summary.get("seeds", []):
            if seed["status"] == "failed":
                found = True
                lines.append(
                    f"- {model} seed {seed['seed']} **failed**: {_cell(seed.get('error'))}"
                )
    if not found:
        lines.append("None: every run completed.")
    return [*lines, ""]


def _splits_used(model_summary: dict[str, Any]) -> str:
    """The split(s) the completed seeds were scored on, e.g. ``valid`` for Devign (no test)."""
    used = sorted({str(s["split"]) for s in model_summary["seeds"] if s.get("split")})
    return ", ".join(used) if used else str(model_summary.get("split"))


def _cost_lines(summary: dict[str, Any]) -> list[str]:
    costs = {m: s["cost"] for m, s in summary.get("models", {}).items() if s.get("cost")}
    if not costs:
        return []
    lines = [
        "## Cost",
        "",
        "| model | cost_usd | training_time_s | billable_time_s | spot savings |",
        "|---|---|---|---|---|",
    ]
    for model, cost in costs.items():
        training, billable = cost["training_time_s"] or 0, cost["billable_time_s"] or 0
        savings = f"{100 * (1 - billable / training):.1f}%" if training else "n/a"
        lines.append(
            f"| {model} | {cost['total_usd']:.4f} | {training:.0f} | {billable:.0f} | {savings} |"
        )
    total = sum(cost["total_usd"] for cost in costs.values())
    return [
        *lines,
        "",
        f"Total: ${total:.4f} (billable time x the on-demand price: an upper bound for spot "
        "jobs, whose hourly price is lower).",
        "",
    ]


def write_report(summary: dict[str, Any], output_root: str | Path) -> Path:
    """Write ``<root>/production_summary/production_report.md`` and its PNGs; return its path.

    Args:
        summary: what :func:`streamguard_core.pipeline.aggregate.aggregate_all` returned.
        output_root: the production run's output root (seed directories are read from it for
            the training curves and the precision-recall curves).
    """
    root = Path(output_root)
    out = root / SUMMARY_DIR
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# StreamGuard production run",
        "",
        f"Generated {summary.get('generated_at', 'n/a')} from `{summary.get('output_root', root)}`"
        f" (split: {summary.get('split', 'n/a')}; a seed whose data has no such split is scored "
        "on valid, as its row says).",
        "",
    ]
    lines += _verdict_lines(summary)
    lines += ["## Models", ""]
    lines += _overview_lines(summary)
    for model, model_summary in summary.get("models", {}).items():
        lines += _model_lines(model, model_summary)
    lines += _problem_lines(summary)
    lines += _cost_lines(summary)

    lines += ["## Plots", ""]
    curves = plot_training_curves(summary, root, out / CURVES_PNG)
    best_seed: dict[str, Any] | None = summary.get("best_seed")
    confusion = None
    if best_seed:
        best_model = best_seed["model"]
        for seed in summary["models"][best_model]["seeds"]:
            if seed["seed"] == best_seed["seed"] and seed.get("confusion_matrix"):
                title = f"{best_model} seed {seed['seed']} ({seed['split']})"
                matrix = seed["confusion_matrix"]
                confusion = plot_confusion_matrix(matrix, title, out / CONFUSION_PNG)
    pr = plot_pr_curves(summary, root, out / PR_PNG)
    for made, name, title, absent in (
        (curves, CURVES_PNG, "Training curves", "no neural run recorded a training history"),
        (confusion, CONFUSION_PNG, "Confusion matrix (best seed)", "no best seed with metrics"),
        (pr, PR_PNG, "Precision-recall curves", "no completed seed with two-class predictions"),
    ):
        if made is None:
            (out / name).unlink(missing_ok=True)  # never leave an earlier run's plot behind
            lines += [f"### {title}", "", f"Not drawn: {absent}.", ""]
        else:
            lines += [f"### {title}", "", f"![{title}]({name})", ""]

    lines += ["## Best model", ""]
    if best_seed:
        lines += [
            f"- model: {best_seed['model']}, seed {best_seed['seed']} (F1 {_fmt(best_seed['f1'])})",
            f"- run directory: `{best_seed['run_dir']}`",
            f"- seed directory: `{best_seed['seed_dir']}`",
            f"- model directory: `{best_seed['model_dir'] or 'n/a'}`",
        ]
    else:
        lines.append("No model completed a seed.")
    return atomic_write_text(out / REPORT_FILE, "\n".join(lines) + "\n")


def append_comparison(report_path: str | Path, evaluation: dict[str, Any]) -> Path:
    """Append the model comparison (``compare.comparison_markdown``) to the report
    (``production_report.md``), its plots linked relative to the report."""
    import os

    from streamguard_core.evaluation.compare import comparison_markdown

    report = Path(report_path)
    links = {
        key: os.path.relpath(path, report.parent)
        for key, path in (evaluation.get("plots") or {}).items()
    }
    section = comparison_markdown(evaluation, image_links=links)
    report.write_text(report.read_text(encoding="utf-8") + "\n" + section, encoding="utf-8")
    return report
