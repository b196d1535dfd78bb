"""Code metrics and the array-backed tree ensemble of the ``features: metrics`` baseline."""

from __future__ import annotations

import numpy as np
import pytest

from streamguard_core.config import BaselineConfig
from streamguard_core.models.baseline import BaselineDetector
from streamguard_core.models.code_metrics import (
    TreeEnsemble,
    code_metrics,
    metric_names,
    metrics_matrix,
)

FUNCS = [
    "int f(char *s) {\n  char b[8];\n  strcpy(b, s);\n  return b[0];\n}",
    "int g(int a) { return a + 1; }",
    "void h(char *p, size_t n) {\n  if (!p) return;\n  memcpy(buf, p, n);\n  free(p);\n}",
    "int k(void) {\n  for (int i = 0; i < 4; i++) {\n    if (x[i] > 3) goto err;\n  }\n"
    "  return 0;\nerr:\n  return -1;\n}",
]


def test_metrics_count_what_they_name() -> None:
    names = metric_names()
    row = dict(zip(names, code_metrics(FUNCS[2]), strict=True))
    assert len(code_metrics(FUNCS[0])) == len(names)
    assert row["log_memory_copy"] == pytest.approx(np.log1p(1))
    assert row["log_free"] == pytest.approx(np.log1p(1)) and row["log_alloc"] == 0.0
    assert row["log_lines"] == pytest.approx(np.log1p(5))
    assert metrics_matrix(FUNCS).shape == (4, len(names))
    assert metrics_matrix([]).shape == (0, len(names))


def test_tree_ensemble_matches_sklearn_and_round_trips(tmp_path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the learned side
    y = ((np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) ** 2) > 0.3).astype(int)
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    trees = TreeEnsemble.from_sklearn(model)
    np.testing.assert_allclose(trees.predict_proba(x), model.predict_proba(x)[:, 1], atol=1e-9)
    trees.save(tmp_path / "t.npz")
    again = TreeEnsemble.load(tmp_path / "t.npz")
    np.testing.assert_allclose(again.predict_proba(x), model.predict_proba(x)[:, 1], atol=1e-9)


def test_metrics_baseline_fits_saves_and_loads(tmp_path) -> None:
    funcs = FUNCS * 10
    labels = [1, 0, 1, 0] * 10
    det = BaselineDetector(BaselineConfig(features="metrics", trees=20), seed=1)
    det.fit(funcs, labels, funcs, labels)
    probs = det.predict_proba(funcs)
    assert probs[0] > probs[1]  # the strcpy function scores above the trivial one
    det.save(tmp_path / "m")
    assert not (tmp_path / "m" / "vocabulary.json").exists()
    loaded = BaselineDetector.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(funcs), probs)
    assert loaded.threshold == det.threshold
