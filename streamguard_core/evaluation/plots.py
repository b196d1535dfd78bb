"""PNG plots of a model comparison (matplotlib's Agg renderer, no GUI and no pyplot state).

- :func:`plot_roc_pr`: ROC and precision-recall curves of every model on one figure;
- :func:`plot_reliability`: reliability diagram (observed vulnerable fraction per probability
  bin against the mean predicted probability);
- :func:`plot_seed_f1`: every seed's F1 as a dot, the mean and its Student-t 95% interval as a
  bar, one row per model.

Each takes plain arrays/dicts and a path, writes the PNG atomically and returns the path. The
default resolution (:data:`DEFAULT_DPI`) keeps each file a few tens of kB, small enough to embed
in a Prefect markdown artifact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

DEFAULT_DPI = 80


def _new_figure(width: float, height: float) -> Any:
    """A figure bound to no GUI backend (``Figure`` renders PNGs through Agg on its own)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: Path, dpi: int) -> Path:
    """Write the figure as PNG through a temp file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_roc_pr(
    y: Sequence[int] | np.ndarray,
    probabilities: Mapping[str, Sequence[float] | np.ndarray],
    path: str | Path,
    *,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """ROC (left) and precision-recall (right) curves of every model's probabilities on the
    same items ``y``; the legend gives each ROC-AUC / average precision, the PR panel the
    vulnerable rate (a random detector's precision)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(y)
    fig = _new_figure(9.5, 4.2)
    ax_roc, ax_pr = fig.subplots(1, 2)
    for name, probs in probabilities.items():
        scores = np.asarray(probs, dtype=np.float64)
        fpr, tpr, _ = roc_curve(labels, scores)
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
        ax_pr.plot(
            recall, precision, label=f"{name} (AP {average_precision_score(labels, scores):.3f})"
        )
    ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    rate = float(labels.mean())
    ax_pr.axhline(rate, color="grey", linestyle=":", linewidth=1, label=f"vulnerable {rate:.1%}")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    return _save(fig, Path(path), dpi)


def plot_reliability(
    bins: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    ece: Mapping[str, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Reliability diagram: per model, the observed vulnerable fraction of each non-empty
    probability bin (rows of ``stats.reliability_diagram``) against its mean predicted
    probability; the diagonal is perfect calibration. ``ece`` goes into the legend."""
    fig = _new_figure(5.0, 4.4)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    for name, rows in bins.items():
        filled = [r for r in rows if r.get("count")]
        label = name if not ece or name not in ece else f"{name} (ECE {ece[name]:.3f})"
        ax.plot(
            [r["mean_predicted"] for r in filled],
            [r["fraction_vulnerable"] for r in filled],
            marker="o",
            markersize=4,
            label=label,
        )
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed vulnerable fraction",
        title="Reliability (seed-mean probabilities)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path), dpi)


def plot_seed_f1(
    per_model: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    *,
    references: Mapping[str, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """One row per model: each seed's F1 (dots), the mean and its t 95% interval (bar).

    Args:
        per_model: ``{model: {"values": [f1 per seed], "mean", "ci95_low", "ci95_high"}}``
            (an interval of None, e.g. with one seed, draws the mean alone).
        references: vertical lines, e.g. ``{"all-vulnerable F1": 0.63}``.
    """
    names = list(per_model)
    fig = _new_figure(6.5, 1.2 + 0.55 * len(names))
    ax = fig.subplots()
    for row, name in enumerate(names):
        summary = per_model[name]
        values = [v for v in summary.get("values", []) if v is not None]
        ax.scatter(values, [row] * len(values), color="tab:blue", s=22, zorder=3)
        mean, low, high = summary.get("mean"), summary.get("ci95_low"), summary.get("ci95_high")
        if mean is not None:
            xerr = None if low is None or high is None else [[mean - low], [high - mean]]
            ax.errorbar(
                [mean],
                [row],
                xerr=xerr,
                fmt="|",
                color="black",
                markersize=14,
                capsize=5,
                zorder=2,
            )
    for label, value in (references or {}).items():
        ax.axvline(value, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            label,
            (value, -0.5),
            fontsize=7,
            color="grey",
            rotation=90,
            ha="right",
            va="top",
        )
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.4, -0.6)  # the first model on top
    ax.set(xlabel="F1 (vulnerable class)", title="F1 per seed, mean and t 95% CI")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, Path(path), dpi)
