"""Binary classification metrics for vulnerability detection (class 1 = vulnerable)."""

from __future__ import annotations

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
)


def classification_metrics(
    y_true: np.ndarray | list[int], y_prob: np.ndarray | list[float], threshold: float = 0.5
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 of the vulnerable class, macro F1, ROC-AUC, PR-AUC, MCC and
    the confusion matrix ``[[tn, fp], [fn, tp]]`` at ``threshold``.

    ROC-AUC and PR-AUC are None when ``y_true`` holds one class only (they are undefined).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true {y.shape} and y_prob {p.shape} must be 1-D of equal length")
    if len(y) == 0:
        raise ValueError("no samples to score")
    pred = (p >= threshold).astype(np.int64)
    both = len(np.unique(y)) == 2
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "mcc": float(matthews_corrcoef(y, pred)),
        "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "predicted_positive_rate": float(pred.mean()),
    }


def best_f1_threshold(y_true: np.ndarray | list[int], y_prob: np.ndarray | list[float]) -> float:
    """The decision threshold that maximises the vulnerable-class F1 (0.5 if undefined)."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_prob, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    # f1[i] belongs to thresholds[i]; the last (precision=1, recall=0) point has no threshold
    return float(thresholds[int(np.argmax(f1[:-1]))])
