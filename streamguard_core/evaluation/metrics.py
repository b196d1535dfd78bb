"""Binary classification metrics for vulnerability detection (class 1 = vulnerable), and the
decision threshold tuned on labelled data for one objective (F1, accuracy, target precision)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from streamguard_core.config import ThresholdObjective, TrainConfig

# the CodeXGLUE convention: accuracy of "vulnerable" iff probability >= 0.5
HALF = 0.5
# what ThresholdChoice.score measures, per objective (the best epoch is chosen on it)
SELECTION_METRIC: dict[ThresholdObjective, str] = {
    "f1": "f1",
    "accuracy": "accuracy",
    "precision": "recall_at_target_precision",
}


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold tuned for one objective, with what it reached where it was tuned.

    Attributes:
        threshold: predict "vulnerable" when the probability is ``>= threshold``.
        objective: what it was tuned for (``TrainConfig.threshold_objective``).
        score: the objective's value at ``threshold``, higher is better (model selection):
            F1, accuracy, or, for "precision", the recall at the target precision, or
            ``precision - 1`` (in [-1, 0]) when no threshold reaches the target, so that any
            model reaching it ranks above every model that does not.
        target_precision: the precision asked for (the "precision" objective only, else None).
        target_reached: whether a threshold reached ``target_precision`` (None for the others).
        note: why the threshold is not what the objective asked for (None when it is).
    """

    threshold: float
    objective: ThresholdObjective
    score: float
    target_precision: float | None = None
    target_reached: bool | None = None
    note: str | None = None

    def record(self) -> dict[str, Any]:
        """The keys a metrics dict carries about how its threshold was chosen."""
        return {
            "threshold_objective": self.objective,
            "target_precision": self.target_precision,
            "target_precision_reached": self.target_reached,
            "threshold_note": self.note,
        }


def classification_metrics(
    y_true: np.ndarray | list[int],
    y_prob: np.ndarray | list[float],
    threshold: float | ThresholdChoice = HALF,
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 of the vulnerable class, macro F1, ROC-AUC, PR-AUC, MCC and
    the confusion matrix ``[[tn, fp], [fn, tp]]`` at ``threshold``, and ``accuracy_at_half``
    (accuracy at 0.5, the CodeXGLUE convention, whatever the threshold).

    A :class:`ThresholdChoice` as ``threshold`` also adds its :meth:`ThresholdChoice.record`
    (``threshold_objective``, ``target_precision``, ``target_precision_reached``,
    ``threshold_note``). ROC-AUC and PR-AUC are None when ``y_true`` holds one class only (they
    are undefined).
    """
    if isinstance(threshold, ThresholdChoice):
        choice, cut = threshold, threshold.threshold
    else:
        choice, cut = None, float(threshold)
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true {y.shape} and y_prob {p.shape} must be 1-D of equal length")
    if len(y) == 0:
        raise ValueError("no samples to score")
    pred = (p >= cut).astype(np.int64)
    both = len(np.unique(y)) == 2
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "threshold": cut,
        "accuracy": float(accuracy_score(y, pred)),
        "accuracy_at_half": float(accuracy_score(y, (p >= HALF).astype(np.int64))),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "mcc": float(matthews_corrcoef(y, pred)),
        "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "predicted_positive_rate": float(pred.mean()),
        **(choice.record() if choice is not None else {}),
    }


def best_f1_threshold(y_true: np.ndarray | list[int], y_prob: np.ndarray | list[float]) -> float:
    """The decision threshold that maximises the vulnerable-class F1 (0.5 if undefined)."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_prob, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return HALF
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    # f1[i] belongs to thresholds[i]; the last (precision=1, recall=0) point has no threshold
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _counts_per_threshold(
    y: np.ndarray, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, true positives, false positives) at every distinct cut.

    The first cut lies just above the highest probability (nothing predicted vulnerable), so
    "always safe" is a candidate too; the others are the distinct probabilities.
    """
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    thresholds = thresholds.astype(np.float64)
    # sklearn's first threshold is +inf (JSON has no infinity): the next float above the max
    thresholds[0] = float(np.nextafter(p.max(), np.inf))
    return thresholds, np.rint(tpr * n_pos), np.rint(fpr * n_neg)


def tune_threshold(
    y_true: np.ndarray | list[int],
    y_prob: np.ndarray | list[float],
    objective: ThresholdObjective | None = None,
    target_precision: float | None = None,
) -> ThresholdChoice:
    """The decision threshold that serves ``objective`` best on these labels.

    - ``"f1"``: the threshold maximising the vulnerable-class F1 (:func:`best_f1_threshold`).
    - ``"accuracy"``: the threshold maximising accuracy, "always safe" included, so it is never
      below the majority-class accuracy on these labels (ties: the highest threshold).
    - ``"precision"``: the lowest threshold whose precision is ``>= target_precision`` (the most
      recall at that precision); when none reaches it, the threshold of the highest precision
      (ties: the lowest), with ``target_reached`` False and a ``note`` saying so.

    With one class in ``y_true`` nothing can be tuned: the threshold is 0.5 and ``note`` says
    why.

    Args:
        y_true: labels (1 = vulnerable), shape [n].
        y_prob: probability of the vulnerable class, shape [n].
        objective: None: ``TrainConfig``'s default.
        target_precision: for "precision" (None: ``TrainConfig``'s default); ignored otherwise.

    Returns:
        The :class:`ThresholdChoice`.
    """
    defaults = TrainConfig()
    objective = objective or defaults.threshold_objective
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true {y.shape} and y_prob {p.shape} must be 1-D, equal, non-empty")
    if objective not in SELECTION_METRIC:
        raise ValueError(f"unknown threshold objective {objective!r}")
    target = None
    if objective == "precision":
        target = defaults.target_precision if target_precision is None else target_precision
    if len(np.unique(y)) < 2:
        return _untuned(y, p, objective, target)
    if objective == "f1":
        threshold = best_f1_threshold(y, p)
        f1 = float(f1_score(y, (p >= threshold).astype(np.int64), zero_division=0))
        return ThresholdChoice(threshold, objective, f1)
    thresholds, tp, fp = _counts_per_threshold(y, p)
    if objective == "accuracy":
        accuracy = (tp + (len(y) - y.sum() - fp)) / len(y)
        best = int(np.argmax(accuracy))  # thresholds descend: the first maximum is the highest
        return ThresholdChoice(float(thresholds[best]), objective, float(accuracy[best]))
    assert target is not None
    return _precision_cut(thresholds, tp, fp, int(y.sum()), float(target))


def _untuned(
    y: np.ndarray, p: np.ndarray, objective: ThresholdObjective, target: float | None
) -> ThresholdChoice:
    """0.5 and its score: labels of one class leave nothing to tune."""
    pred = (p >= HALF).astype(np.int64)
    predicted = int(pred.sum())
    scores = {
        "f1": float(f1_score(y, pred, zero_division=0)),
        "accuracy": float(np.mean(pred == y)),
        "precision": (float((pred & y).sum()) / predicted if predicted else 0.0) - 1.0,
    }
    return ThresholdChoice(
        HALF, objective, scores[objective], target, False if target is not None else None,
        f"the labels hold one class only: threshold {HALF} (not tuned)",
    )  # fmt: skip


def _precision_cut(
    thresholds: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_pos: int, target: float
) -> ThresholdChoice:
    """The lowest cut with precision >= ``target``, else the (lowest) most precise one."""
    predicted = tp + fp
    cuts = np.flatnonzero(predicted > 0)  # "nothing predicted" has no precision
    precision = tp[cuts] / predicted[cuts]
    recall = tp[cuts] / n_pos
    reaching = np.flatnonzero(precision >= target - 1e-12)
    if len(reaching):
        best = int(reaching[-1])  # thresholds descend: the last one reaching is the lowest
        return ThresholdChoice(
            float(thresholds[cuts[best]]), "precision", float(recall[best]), target, True
        )
    top = float(precision.max())
    best = int(np.flatnonzero(precision == top)[-1])
    threshold = float(thresholds[cuts[best]])
    return ThresholdChoice(
        threshold, "precision", top - 1.0, target, False,
        f"no threshold reaches precision {target:g}: the highest, {top:.3f} "
        f"(recall {recall[best]:.3f}), is at threshold {threshold:.4f}",
    )  # fmt: skip
