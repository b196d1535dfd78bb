"""Statistics of the model comparison against published and hand-computed values.

DeLong's test is checked against R's pROC (Robin et al. 2011) on its ``aSAH`` data set (113
patients with an aneurysmal subarachnoid haemorrhage; Turck et al. 2010, Intensive Care Medicine
36(1):107-115; outcome "Poor" = 1, 41 of 113). The expected values are those pROC's own test
suite asserts for ``roc.test`` with its default DeLong method, ``tests/testthat/test-roc.test.R``
of github.com/xrobin/pROC (``t1 <- roc.test(r.wfns, r.s100b)``, ``t2 <- roc.test(r.wfns,
r.ndka)``, ``t3 <- roc.test(r.ndka, r.s100b)``), with the curves of
``tests/testthat/helper-rocs.R`` (``roc(aSAH$outcome, aSAH$<marker>)``, direction "<"); the AUCs
are those pROC prints for the three curves (``tests/testthat/print_output/r.wfns`` etc.:
0.8237, 0.7314, 0.612). The t1 example is also the one in pROC's ``roc.test`` documentation
(Z = 2.209, p-value = 0.02718).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from streamguard_core.evaluation import stats

# aSAH columns in the data set's row order: outcome (1 = Poor), s100b, wfns, ndka.
ASAH_OUTCOME = [
    0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0,
    1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0,
    1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0,
]  # fmt: skip
ASAH_S100B = [
    0.13, 0.14, 0.10, 0.04, 0.13, 0.10, 0.47, 0.16, 0.18, 0.10, 0.12, 0.10, 0.44, 0.71, 0.04,
    0.08, 0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11, 0.13, 0.19,
    0.05, 0.16, 0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.50, 0.46, 0.16, 0.07, 0.43,
    0.45, 0.11, 0.08, 0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.10, 0.14, 0.15, 0.07, 0.06,
    0.77, 0.05, 0.09, 0.30, 0.03, 0.09, 0.04, 0.23, 0.70, 0.09, 0.27, 0.71, 0.08, 0.26, 0.08,
    0.16, 0.09, 0.13, 0.10, 0.08, 0.11, 0.33, 0.11, 0.28, 0.07, 0.10, 0.32, 0.22, 0.07, 0.05,
    0.24, 0.38, 0.10, 0.15, 0.08, 0.14, 0.10, 0.07, 0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82,
    0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.50, 0.48,
]  # fmt: skip
ASAH_WFNS = [
    1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2, 1,
    1, 3, 4, 2, 1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1, 2, 2,
    2, 1, 5, 1, 1, 2, 5, 2, 1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4, 2, 1, 4,
    5, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1, 2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1, 1,
]  # fmt: skip
ASAH_NDKA = [
    3.01, 8.54, 8.09, 10.42, 17.40, 12.75, 6.00, 13.20, 15.54, 6.01, 15.96, 17.86, 5.18, 8.90,
    13.41, 20.75, 11.60, 16.11, 32.37, 54.82, 32.41, 49.94, 40.34, 9.47, 6.29, 12.53, 6.54,
    6.30, 80.30, 12.80, 9.80, 9.81, 9.85, 18.21, 5.03, 14.04, 21.93, 8.02, 7.42, 8.38, 6.59,
    9.63, 13.12, 7.96, 14.34, 41.43, 7.63, 7.06, 12.59, 13.56, 3.87, 9.44, 7.66, 12.98,
    419.19, 27.19, 22.27, 9.95, 21.22, 11.73, 10.40, 58.83, 6.39, 11.09, 12.22, 13.67, 17.21,
    22.63, 12.90, 9.70, 21.57, 8.23, 72.57, 15.54, 10.51, 10.60, 14.57, 5.19, 9.63, 4.61,
    21.48, 17.30, 12.71, 9.44, 11.07, 19.46, 10.83, 5.37, 11.97, 7.75, 9.83, 10.55, 28.49,
    8.53, 12.57, 12.90, 46.83, 11.68, 12.67, 9.01, 9.57, 34.06, 11.72, 14.26, 47.61, 11.67,
    24.58, 10.33, 13.87, 15.89, 22.43, 6.79, 13.45,
]  # fmt: skip
MARKERS = {"s100b": ASAH_S100B, "wfns": ASAH_WFNS, "ndka": ASAH_NDKA}

# pROC's roc.test (DeLong, paired, two-sided): (roc1, roc2, Z, p, conf.int low, conf.int high)
PROC_ROC_TEST = [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846,
     0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876,
     0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914,
     0.0488706064228094),
]  # fmt: skip
PROC_AUC = {"wfns": 0.8237, "s100b": 0.7314, "ndka": 0.612}  # as pROC prints them


def test_asah_transcription_matches_the_data_set():
    assert len(ASAH_OUTCOME) == len(ASAH_S100B) == len(ASAH_WFNS) == len(ASAH_NDKA) == 113
    assert sum(ASAH_OUTCOME) == 41  # "72 controls (Good) < 41 cases (Poor)" in pROC's output


@pytest.mark.parametrize(("first", "second", "z", "p", "low", "high"), PROC_ROC_TEST)
def test_delong_matches_proc_roc_test_on_asah(first, second, z, p, low, high):
    result = stats.delong_test(ASAH_OUTCOME, MARKERS[first], MARKERS[second])
    assert round(result["auc_a"], 4) == pytest.approx(PROC_AUC[first])
    assert round(result["auc_b"], 4) == pytest.approx(PROC_AUC[second])
    assert result["z"] == pytest.approx(z, rel=1e-9)
    assert result["p_value"] == pytest.approx(p, rel=1e-9)
    assert result["ci95_low"] == pytest.approx(low, rel=1e-9)
    assert result["ci95_high"] == pytest.approx(high, rel=1e-9)
    # and the reversed comparison: Z changes sign, p stays (pROC's own symmetry test)
    reverse = stats.delong_test(ASAH_OUTCOME, MARKERS[second], MARKERS[first])
    assert reverse["z"] == pytest.approx(-z, rel=1e-9)
    assert reverse["p_value"] == pytest.approx(p, rel=1e-9)


def test_delong_of_identical_curves_is_z0_p1():
    result = stats.delong_test(ASAH_OUTCOME, ASAH_WFNS, ASAH_WFNS)
    assert result["z"] == 0 and result["p_value"] == 1 and result["difference"] == 0


def test_delong_auc_is_sklearns_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    a = np.round(rng.random(300) + 0.3 * y, 1)  # rounded: many ties
    b = rng.random(300)
    result = stats.delong_test(y, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)


def test_delong_needs_two_items_of_each_class():
    with pytest.raises(ValueError, match="two items of each class"):
        stats.delong_test([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], [0.5, 0.4, 0.3, 0.2])


def test_mcnemar_by_hand():
    # 10 items: A right/B wrong on 1 item, A wrong/B right on 6, both right on 3
    y = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # right on items 0, 7, 8, 9
    b = np.array([0, 1, 1, 1, 1, 1, 1, 0, 0, 0])  # right on items 1-9
    result = stats.mcnemar_exact(y, a, b)
    assert (result["a_right_b_wrong"], result["a_wrong_b_right"]) == (1, 6)
    # two-sided exact binomial, n = 7, p = 1/2: 2 * P(X <= 1) = 2 * (1 + 7) / 128
    assert result["p_value"] == pytest.approx(16 / 128)
    assert result["accuracy_difference"] == pytest.approx((1 - 6) / 10)
    # 5 discordant items all one way: 2 / 2**5
    assert stats.mcnemar_exact(y[:5], np.zeros(5), np.ones(5))["p_value"] == pytest.approx(2 / 32)
    # no discordant item: nothing speaks against the null
    assert stats.mcnemar_exact(y, a, a)["p_value"] == 1.0


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # None is not in the family (m = 2 here) and stays None; values cap at 1
    assert stats.holm([0.2, None, 0.7]) == [pytest.approx(0.4), None, pytest.approx(0.7)]
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(0, 1.5, n))))
    return y, p


@pytest.mark.parametrize("metric", ["accuracy", "f1", "roc_auc"])
def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_n(metric):
    widths = []
    for n in (200, 5000):
        y, p = _separable(n, seed=n)
        scores = p if metric == "roc_auc" else (p >= 0.5).astype(float)
        ci = stats.bootstrap_ci(metric, y, scores, n_boot=300, seed=1)
        assert ci["ci95_low"] < ci["estimate"] < ci["ci95_high"]
        assert ci["n_valid"] == 300
        widths.append(ci["ci95_high"] - ci["ci95_low"])
    # the width falls roughly as 1/sqrt(n): 5 times narrower for 25 times the items
    assert widths[1] < widths[0] / 3
    # seeded: the same arguments, the same interval
    again = stats.bootstrap_ci(metric, y, scores, n_boot=300, seed=1)
    assert again == stats.bootstrap_ci(metric, y, scores, n_boot=300, seed=1)


def test_weighted_metrics_equal_sklearn_on_the_resampled_items():
    y, p = _separable(150, seed=5)
    p = np.round(p, 2)  # ties
    pred = (p >= 0.5).astype(float)
    weights = stats.bootstrap_weights(150, 20, seed=2)
    assert (weights.sum(axis=1) == 150).all()
    got = {m: stats.bootstrap_metric(m, y, p if m == "roc_auc" else pred, weights)
           for m in ("accuracy", "f1", "roc_auc")}  # fmt: skip
    for b, row in enumerate(weights):
        items = np.repeat(np.arange(150), row.astype(int))
        assert got["accuracy"][b] == pytest.approx(accuracy_score(y[items], pred[items]))
        assert got["f1"][b] == pytest.approx(f1_score(y[items], pred[items]))
        assert got["roc_auc"][b] == pytest.approx(roc_auc_score(y[items], p[items]))


def test_bootstrap_of_seeds_scores_every_seed_on_the_same_resample():
    y, p = _separable(300, seed=7)
    seeds = np.vstack([p, np.clip(p + 0.1, 0, 1), p**2])
    weights = stats.bootstrap_weights(300, 50, seed=0)
    together = stats.bootstrap_metric("roc_auc", y, seeds, weights)
    one_by_one = np.mean([stats.bootstrap_metric("roc_auc", y, s, weights) for s in seeds], 0)
    np.testing.assert_allclose(together, one_by_one)
    ci = stats.bootstrap_ci("roc_auc", y, seeds, n_boot=200)
    assert ci["estimate"] == pytest.approx(np.mean([roc_auc_score(y, s) for s in seeds]))


def test_accuracy_and_f1_need_predictions():
    with pytest.raises(ValueError, match="0/1 predictions"):
        stats.metric_value("f1", [0, 1], [0.2, 0.7])


def test_paired_bootstrap_identical_models_p1_clearly_better_small_p():
    y, p = _separable(800, seed=11)
    worse = np.where(np.random.default_rng(0).random(800) < 0.5, 1 - p, p)  # half scrambled
    same = stats.paired_bootstrap("roc_auc", y, p, p, n_boot=300, seed=0)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    assert same["ci95_low"] == same["ci95_high"] == 0
    better = stats.paired_bootstrap("roc_auc", y, p, worse, n_boot=300, seed=0)
    assert better["difference"] > 0.1
    assert better["p_value"] == pytest.approx(1 / 301)  # the smallest p 300 resamples can give
    assert 0 < better["ci95_low"] < better["difference"] < better["ci95_high"]
    pred, worse_pred = (p >= 0.5).astype(float), (worse >= 0.5).astype(float)
    f1 = stats.paired_bootstrap("f1", y, pred, worse_pred, n_boot=300, seed=0)
    assert f1["difference"] == pytest.approx(f1_score(y, pred) - f1_score(y, worse_pred))
    assert f1["p_value"] < 0.01


def test_ece_of_calibrated_probabilities_is_near_zero_and_of_overconfident_ones_is_not():
    rng = np.random.default_rng(0)
    p = rng.random(100_000)
    y = (rng.random(100_000) < p).astype(int)  # the probabilities are the true frequencies
    assert stats.expected_calibration_error(y, p) < 0.01
    logit = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-3 * logit))  # same ranking, pushed towards 0 and 1
    assert stats.expected_calibration_error(y, overconfident) > 0.1
    bins = stats.reliability_diagram(y, overconfident)
    assert len(bins) == stats.DEFAULT_N_BINS and sum(b["count"] for b in bins) == 100_000
    # over-confident: the top bin predicts more than it observes
    assert bins[-1]["mean_predicted"] > bins[-1]["fraction_vulnerable"]


def test_ece_by_hand():
    # bin [0.1, 0.2): p 0.1, 0.1 and labels 0, 1 -> |0.1 - 0.5| * 2/4; bin [0.9, 1]: p 0.9, 1.0,
    # labels 1, 1 -> |0.95 - 1| * 2/4
    y, p = [0, 1, 1, 1], [0.1, 0.1, 0.9, 1.0]
    assert stats.expected_calibration_error(y, p) == pytest.approx(0.4 * 0.5 + 0.05 * 0.5)


def test_threshold_for_precision_constructed():
    y = [0, 0, 1, 0, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    # p >= 0.5 flags four positives (precision 1, recall 4/5); p >= 0.4 adds a negative (0.8);
    # p >= 0.3 gives 5/6 = 0.833 at recall 1; p >= 0.2 gives 5/7
    top = stats.threshold_for_precision(y, p, 0.9, n_boot=200)
    assert top["reached"] and top["threshold"] == 0.5
    assert top["precision"] == 1.0 and top["recall"] == pytest.approx(0.8)
    assert top["recall_ci95_low"] <= top["recall"] <= top["recall_ci95_high"]
    assert 0 <= top["unreachable_fraction"] < 1
    lower = stats.threshold_for_precision(y, p, 0.8, n_boot=50)
    assert lower["threshold"] == 0.3 and lower["recall"] == 1.0
    assert lower["precision"] == pytest.approx(5 / 6)


def test_threshold_for_precision_says_when_the_target_is_unreachable():
    result = stats.threshold_for_precision([1, 0, 1, 0], [0.2, 0.9, 0.1, 0.8], 0.9, n_boot=50)
    assert result["reached"] is False and result["threshold"] is None
    assert result["recall"] is None and "no threshold reaches precision 0.9" in result["note"]
    assert "best precision of any threshold: 0.5000" in result["note"]
