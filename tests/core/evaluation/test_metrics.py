"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest

from streamguard_core.evaluation.metrics import best_f1_threshold, classification_metrics


def test_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7]
    m = classification_metrics(y, p, threshold=0.5)
    # predictions: 1 1 0 1 0 0 0 1 -> tp=3, fn=1, fp=1, tn=3
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(0.75)
    assert m["mcc"] == pytest.approx(0.5)
    # ranking: of 16 (pos, neg) pairs, only (0.3 vs 0.6) and (0.3 vs 0.4) are misordered
    assert m["roc_auc"] == pytest.approx(14 / 16)
    assert 0 < m["pr_auc"] <= 1 and m["n"] == 8 and m["positives"] == 4


def test_single_class_has_no_auc_and_errors_are_clear():
    m = classification_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["confusion_matrix"] == [[2, 1], [0, 0]]
    with pytest.raises(ValueError, match="equal length"):
        classification_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics([], [])


def test_best_threshold_maximises_f1():
    y = [0, 0, 1, 1, 1]
    p = [0.1, 0.35, 0.3, 0.8, 0.9]
    t = best_f1_threshold(y, p)
    assert t == pytest.approx(0.3)  # catches all three positives at the cost of one fp
    assert classification_metrics(y, p, t)["f1"] == pytest.approx(6 / 7)
    assert best_f1_threshold([1, 1], [0.2, 0.9]) == 0.5
