"""Statistics for comparing detectors: confidence intervals, paired tests, calibration.

Pure functions over numpy arrays (no I/O). Class 1 is "vulnerable" throughout.

- Over seeds: the Student-t 95% interval of :func:`summarize_values` (re-exported here).
- Over items: a non-parametric bootstrap. A resample draws ``n`` items with replacement; it is
  represented by a row of multinomial counts (:func:`bootstrap_weights`), so every model and
  every seed is scored on *the same* resamples (paired) and a metric of a resample is a weighted
  metric of the original items. ``n_boot`` (default :data:`DEFAULT_N_BOOT` = 1000) resamples,
  from ``numpy.random.default_rng(seed)``: the same seed gives the same intervals and p-values.
  Intervals are percentile intervals (2.5th and 97.5th percentiles).
- Paired bootstrap test of a difference: two-sided p-value from the bootstrap distribution
  shifted to the null, ``(1 + #{|d* - d| >= |d|}) / (n_boot + 1)`` (a difference of exactly 0
  gives p = 1; the smallest p is ``1 / (n_boot + 1)``).
- McNemar's exact test on the discordant pairs (scipy's binomial test, p = 1/2).
- DeLong's test for two correlated ROC-AUCs (DeLong, DeLong & Clarke-Pearson 1988), computed
  with midranks as in Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing
  the areas under correlated receiver operating characteristic curves", IEEE SPL 21(11).
- Holm's step-down correction of a family of p-values.
- Expected calibration error over equal-width probability bins, and the reliability-diagram
  data behind it.
- The lowest decision threshold reaching a target precision, its recall, and a bootstrap
  interval of that recall with the threshold re-chosen on every resample.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from streamguard_core.pipeline.aggregate import summarize_values

__all__ = [
    "BOOTSTRAP_METRICS",
    "DEFAULT_N_BINS",
    "DEFAULT_N_BOOT",
    "bootstrap_ci",
    "bootstrap_metric",
    "bootstrap_weights",
    "delong_test",
    "expected_calibration_error",
    "holm",
    "mcnemar_exact",
    "metric_value",
    "paired_bootstrap",
    "reliability_diagram",
    "summarize_values",
    "threshold_for_precision",
]

DEFAULT_N_BOOT = 1000
"""Bootstrap resamples unless told otherwise (``streamguard compare --bootstrap N``)."""
DEFAULT_N_BINS = 10
"""Equal-width probability bins of the expected calibration error and reliability diagram."""
CI_QUANTILES = (2.5, 97.5)
Z_975 = 1.959963984540054
"""The standard normal's 97.5th percentile (``scipy.stats.norm.ppf(0.975)``)."""

Metric = Literal["accuracy", "f1", "roc_auc"]
BOOTSTRAP_METRICS: tuple[Metric, ...] = ("accuracy", "f1", "roc_auc")
"""Metrics the bootstrap scores: accuracy and F1 of 0/1 predictions, ROC-AUC of scores."""


# --------------------------------------------------------------------------- inputs


def _labels(y: Any) -> np.ndarray:
    """``y`` as a 1-D int array of 0/1 labels (ValueError otherwise)."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError("labels must be 0/1 (1 = vulnerable)")
    return arr.astype(np.int64)


def _scores(scores: Any, n: int, what: str = "scores") -> np.ndarray:
    """``scores`` as a 2-D float array ``(k, n)`` (a 1-D array is one row)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"{what} must have shape (n,) or (k, n) with n = {n}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} hold NaN or infinite values")
    return arr


# --------------------------------------------------------------------------- bootstrap


def bootstrap_weights(n_items: int, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n_items)`` multinomial counts: row ``b`` says how often resample ``b`` drew
    each item (rows sum to ``n_items``). Seeded: the same arguments give the same resamples."""
    if n_items < 1 or n_boot < 1:
        raise ValueError(f"need n_items >= 1 and n_boot >= 1, got {n_items}, {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot).astype(np.float64)


def _weighted_roc_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count one half) of every row of item ``weights``; NaN for a row that has
    no weight on one class. ``weights`` is ``(B, n)``."""
    order = np.argsort(score, kind="mergesort")
    sorted_score, sorted_y, w = score[order], y[order], weights[:, order]
    # tie groups of equal scores: a positive beats the negatives of lower groups, ties half
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    neg_per_group = np.add.reduceat(w * (sorted_y == 0), starts, axis=1)
    neg_below = np.cumsum(neg_per_group, axis=1) - neg_per_group
    credit = neg_below + 0.5 * neg_per_group  # (B, groups)
    group_of_item = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(score)]))
    pos = sorted_y == 1
    wins = (w[:, pos] * credit[:, group_of_item[pos]]).sum(axis=1)
    n_pos, n_neg = w[:, pos].sum(axis=1), w[:, ~pos].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = wins / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def _weighted_metric(
    metric: Metric, y: np.ndarray, score: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``metric`` of one score row under every row of item ``weights`` (``(B, n)`` -> ``(B,)``)."""
    if metric == "roc_auc":
        return _weighted_roc_auc(y, score, weights)
    if not np.isin(score, (0.0, 1.0)).all():
        raise ValueError(f"{metric} needs 0/1 predictions, got other values")
    pred = score == 1.0
    if metric == "accuracy":
        return weights @ (pred == (y == 1)).astype(np.float64) / weights.sum(axis=1)
    if metric == "f1":
        tp = weights @ (pred & (y == 1)).astype(np.float64)
        fp = weights @ (pred & (y == 0)).astype(np.float64)
        fn = weights @ (~pred & (y == 1)).astype(np.float64)
        denominator = 2 * tp + fp + fn
        return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    raise ValueError(f"unknown metric {metric!r}; expected one of {BOOTSTRAP_METRICS}")


def metric_value(metric: Metric, y: Any, score: Any) -> float | None:
    """``metric`` of one model on all items: accuracy/F1 of 0/1 predictions, ROC-AUC of scores;
    None when undefined (ROC-AUC with one class)."""
    labels = _labels(y)
    row = _scores(score, len(labels))[0]
    value = float(_weighted_metric(metric, labels, row, np.ones((1, len(labels))))[0])
    return value if math.isfinite(value) else None


def bootstrap_metric(metric: Metric, y: Any, scores: Any, weights: np.ndarray) -> np.ndarray:
    """``(B,)``: ``metric`` on every resample of ``weights``, averaged over the rows of
    ``scores`` (``(n,)`` one model, or ``(k, n)`` its k seeds scored on the same resamples)."""
    labels = _labels(y)
    rows = _scores(scores, len(labels))
    if weights.ndim != 2 or weights.shape[1] != len(labels):
        raise ValueError(f"weights must be (B, {len(labels)}), got {weights.shape}")
    return np.mean([_weighted_metric(metric, labels, row, weights) for row in rows], axis=0)


def _interval(values: np.ndarray) -> tuple[float | None, float | None, int]:
    """Percentile 95% interval of the finite values, and how many there were."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, None, 0
    low, high = np.percentile(finite, CI_QUANTILES)
    return float(low), float(high), int(finite.size)


def bootstrap_ci(
    metric: Metric, y: Any, scores: Any, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """Item-level bootstrap 95% interval of ``metric`` (of the seed mean when ``scores`` is
    ``(k, n)``: every seed is scored on the same resample, then averaged).

    Returns:
        ``{"estimate", "ci95_low", "ci95_high", "n_boot", "n_valid"}``; ``n_valid`` counts the
        resamples where the metric is defined (ROC-AUC needs both classes).
    """
    labels = _labels(y)
    rows = _scores(scores, len(labels))
    point = bootstrap_metric(metric, labels, rows, np.ones((1, len(labels))))[0]
    draws = bootstrap_metric(metric, labels, rows, bootstrap_weights(len(labels), n_boot, seed))
    low, high, n_valid = _interval(draws)
    return {
        "estimate": float(point) if math.isfinite(point) else None,
        "ci95_low": low,
        "ci95_high": high,
        "n_boot": n_boot,
        "n_valid": n_valid,
    }


def bootstrap_p_value(difference: float, draws: np.ndarray) -> float | None:
    """Two-sided p of "no difference" from bootstrap draws of a difference, the draws shifted to
    the null: ``(1 + #{|d* - d| >= |d|}) / (B + 1)`` over the finite draws."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0 or not math.isfinite(difference):
        return None
    # a tolerance so that float noise in an exact tie (identical models) counts as a tie
    extreme = np.abs(finite - difference) >= abs(difference) - 1e-12
    return float((1 + extreme.sum()) / (finite.size + 1))


def paired_bootstrap(
    metric: Metric,
    y: Any,
    scores_a: Any,
    scores_b: Any,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of ``metric(A) - metric(B)`` on the same items.

    ``scores_a``/``scores_b`` are ``(n,)`` or ``(k, n)`` (row i of A paired with row i of B,
    e.g. the same seed); the difference is the mean over rows, every row scored on the same
    resamples.

    Returns:
        ``{"difference", "ci95_low", "ci95_high", "p_value", "n_boot", "n_valid"}``.
    """
    labels = _labels(y)
    a, b = _scores(scores_a, len(labels), "scores_a"), _scores(scores_b, len(labels), "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a {a.shape} and scores_b {b.shape} must pair row by row")
    ones = np.ones((1, len(labels)))
    point = float(
        bootstrap_metric(metric, labels, a, ones)[0] - bootstrap_metric(metric, labels, b, ones)[0]
    )
    weights = bootstrap_weights(len(labels), n_boot, seed)
    draws = bootstrap_metric(metric, labels, a, weights) - bootstrap_metric(
        metric, labels, b, weights
    )
    return difference_summary(point, draws)


def difference_summary(point: float, draws: np.ndarray) -> dict[str, Any]:
    """A paired difference and its bootstrap draws as ``{"difference", "ci95_low",
    "ci95_high", "p_value", "n_boot", "n_valid"}``."""
    low, high, n_valid = _interval(draws)
    return {
        "difference": point if math.isfinite(point) else None,
        "ci95_low": low,
        "ci95_high": high,
        "p_value": bootstrap_p_value(point, draws),
        "n_boot": int(draws.size),
        "n_valid": n_valid,
    }


# --------------------------------------------------------------------------- paired tests


def mcnemar_exact(y: Any, pred_a: Any, pred_b: Any) -> dict[str, Any]:
    """McNemar's exact test that two classifiers have the same error rate on the same items.

    Only the discordant items count: ``b`` = A right and B wrong, ``c`` = A wrong and B right;
    under the null each is a fair coin, so p is the two-sided binomial test of ``b`` successes
    in ``b + c`` trials at 1/2 (equal to statsmodels' ``mcnemar(exact=True)``). No discordant
    item gives p = 1.

    Returns:
        ``{"a_right_b_wrong", "a_wrong_b_right", "p_value", "accuracy_difference"}``.
    """
    labels = _labels(y)
    a = _scores(pred_a, len(labels), "pred_a")[0]
    b = _scores(pred_b, len(labels), "pred_b")[0]
    if not (np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()):
        raise ValueError("McNemar's test needs 0/1 predictions")
    from scipy.stats import binomtest

    right_a, right_b = a == labels, b == labels
    n_b = int((right_a & ~right_b).sum())
    n_c = int((~right_a & right_b).sum())
    p = 1.0 if n_b + n_c == 0 else float(binomtest(n_b, n_b + n_c, 0.5).pvalue)
    return {
        "a_right_b_wrong": n_b,
        "a_wrong_b_right": n_c,
        "p_value": min(1.0, p),
        "accuracy_difference": (n_b - n_c) / len(labels),
    }


def _delong_components(
    y: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components of ``(k, n)`` scores (Sun & Xu 2014).

    Returns ``(aucs (k,), v10 (k, m), v01 (k, l))`` for m positives and l negatives: ``v10[r, i]``
    is the fraction of negatives positive i beats under predictor r (ties one half), ``v01[r, j]``
    the fraction of positives that beat negative j.
    """
    from scipy.stats import rankdata

    positives, negatives = scores[:, y == 1], scores[:, y == 0]
    m, n = positives.shape[1], negatives.shape[1]
    tx = rankdata(positives, axis=1)  # midranks (average of tied ranks)
    ty = rankdata(negatives, axis=1)
    tz = rankdata(np.hstack([positives, negatives]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_test(y: Any, score_a: Any, score_b: Any) -> dict[str, Any]:
    """DeLong's test that two ROC-AUCs measured on the same items are equal (two-sided).

    ``z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab)`` with DeLong's covariance of the
    AUCs; the 95% interval of the difference is ``diff ± 1.96 sqrt(var)``. Identical AUCs with
    zero variance (the same scores) give z = 0, p = 1. Matches R's
    ``pROC::roc.test(method="delong", paired=TRUE)``.

    Returns:
        ``{"auc_a", "auc_b", "difference", "variance", "z", "p_value", "ci95_low",
        "ci95_high"}``.

    Raises:
        ValueError: ``y`` holds fewer than two items of a class (no variance estimate).
    """
    labels = _labels(y)
    if min(int(labels.sum()), int((labels == 0).sum())) < 2:
        raise ValueError("DeLong's test needs at least two items of each class")
    scores = np.vstack(
        [_scores(score_a, len(labels), "score_a"), _scores(score_b, len(labels), "score_b")]
    )
    aucs, v10, v01 = _delong_components(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.cov(v10) / m + np.cov(v01) / n  # (2, 2): DeLong's covariance of the two AUCs
    difference = float(aucs[0] - aucs[1])
    variance = float(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
    if variance <= 1e-300:
        z = 0.0 if abs(difference) < 1e-15 else math.copysign(math.inf, difference)
    else:
        z = difference / math.sqrt(variance)
    from scipy.stats import norm

    p = float(2 * norm.sf(abs(z)))
    half = Z_975 * math.sqrt(variance)
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": difference,
        "variance": variance,
        "z": z if math.isfinite(z) else None,
        "p_value": min(1.0, p),
        "ci95_low": difference - half,
        "ci95_high": difference + half,
    }


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order.

    Sorted ascending, the i-th smallest of m gets ``max_{j<=i} min(1, (m - j + 1) p_(j))``
    (same as statsmodels' ``multipletests(method="holm")``). None entries (a test that could
    not run) stay None and do not count in the family.
    """
    present = [(i, float(p)) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    m = len(present)
    running = 0.0
    for rank, (index, p) in enumerate(sorted(present, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


# --------------------------------------------------------------------------- calibration


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each probability: ``[k/B, (k+1)/B)``, the last bin closed at 1."""
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def _probabilities(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = _labels(y)
    probs = _scores(p, len(labels), "probabilities")[0]
    if (probs < 0).any() or (probs > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    return labels, probs


def reliability_diagram(y: Any, p: Any, n_bins: int = DEFAULT_N_BINS) -> list[dict[str, Any]]:
    """Per equal-width probability bin: its edges, item count, mean predicted probability and
    observed vulnerable fraction (None for an empty bin)."""
    labels, probs = _probabilities(y, p)
    index = _bin_index(probs, n_bins)
    rows = []
    for k in range(n_bins):
        in_bin = index == k
        count = int(in_bin.sum())
        rows.append(
            {
                "bin_low": k / n_bins,
                "bin_high": (k + 1) / n_bins,
                "count": count,
                "mean_predicted": float(probs[in_bin].mean()) if count else None,
                "fraction_vulnerable": float(labels[in_bin].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(y: Any, p: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """ECE over ``n_bins`` equal-width bins: ``sum_b (n_b / n) |mean p_b - fraction_b|``
    (0 = perfectly calibrated)."""
    labels = _labels(y)
    bins = reliability_diagram(labels, p, n_bins)
    return float(
        sum(
            b["count"] / len(labels) * abs(b["mean_predicted"] - b["fraction_vulnerable"])
            for b in bins
            if b["count"]
        )
    )


# --------------------------------------------------------------------------- operating point


def _lowest_threshold_for_precision(
    y: np.ndarray, p: np.ndarray, w: np.ndarray, target: float
) -> tuple[float, float, float] | None:
    """(threshold, precision, recall) of the lowest threshold ``t`` whose items ``p >= t`` reach
    ``target`` precision under item weights ``w``; None when no threshold does."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted, w_sorted = p[order], y[order], w[order]
    last_of_group = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # cut only between distinct p
    tp = np.cumsum(w_sorted * y_sorted)[last_of_group]
    flagged = np.cumsum(w_sorted)[last_of_group]
    thresholds = p_sorted[last_of_group]
    total_pos = float((w * y).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged > 0, tp / flagged, 0.0)
    reached = np.flatnonzero((precision >= target - 1e-12) & (tp > 0))
    if reached.size == 0 or total_pos == 0:
        return None
    k = int(reached[-1])  # the lowest threshold = the most items flagged
    return float(thresholds[k]), float(precision[k]), float(tp[k] / total_pos)


def threshold_for_precision(
    y: Any, p: Any, target: float, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """The lowest threshold whose flagged items (``p >= threshold``) reach ``target`` precision,
    its recall, and a bootstrap 95% interval of that recall.

    The lowest such threshold has the highest recall among those reaching the target. On every
    resample the threshold is chosen again (the interval includes the choice); a resample where
    no threshold reaches the target counts as recall 0 (nothing can be flagged at that
    precision), and ``unreachable_fraction`` says how often that happened.

    Returns:
        ``{"target", "reached", "threshold", "precision", "recall", "recall_ci95_low",
        "recall_ci95_high", "n_boot", "unreachable_fraction", "note"}``; when no threshold
        reaches the target on all items, ``reached`` is False, the threshold/precision/recall
        are None and ``note`` says the best precision any threshold gives.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target}")
    labels, probs = _probabilities(y, p)
    ones = np.ones(len(labels))
    found = _lowest_threshold_for_precision(labels, probs, ones, target)
    result: dict[str, Any] = {
        "target": target,
        "reached": found is not None,
        "threshold": None,
        "precision": None,
        "recall": None,
        "recall_ci95_low": None,
        "recall_ci95_high": None,
        "n_boot": n_boot,
        "unreachable_fraction": None,
        "note": None,
    }
    if found is None:
        best = _best_precision(labels, probs)
        result["note"] = (
            f"no threshold reaches precision {target:g} on these {len(labels)} items (best "
            f"precision of any threshold: {best:.4f})"
        )
        return result
    threshold, precision, recall = found
    recalls, unreachable = [], 0
    for weights in bootstrap_weights(len(labels), n_boot, seed):
        chosen = _lowest_threshold_for_precision(labels, probs, weights, target)
        unreachable += chosen is None
        recalls.append(chosen[2] if chosen else 0.0)
    low, high, _ = _interval(np.asarray(recalls))
    result.update(
        threshold=threshold,
        precision=precision,
        recall=recall,
        recall_ci95_low=low,
        recall_ci95_high=high,
        unreachable_fraction=unreachable / n_boot,
    )
    return result


def _best_precision(y: np.ndarray, p: np.ndarray) -> float:
    """The highest precision any threshold ``p >= t`` gives (0 with no positive flagged)."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_group = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_group]
    flagged = np.cumsum(np.ones_like(p_sorted))[last_of_group]
    return float((tp / flagged).max())
