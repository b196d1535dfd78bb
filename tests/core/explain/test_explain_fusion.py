"""Fusion line scores: the mixture-weighted sum of the base models' unit-mass line scores, with
the bases that have no per-line signal left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _explain_testkit import planted_data

from streamguard_core.config import BaselineConfig, FusionConfig
from streamguard_core.explain import Explainer, load_explainer, top_lines
from streamguard_core.explain.fusion import FusionExplainer, unit_mass
from streamguard_core.models.baseline import BaselineDetector
from streamguard_core.models.fusion import FusionDetector, FusionNet, save_fusion

MIXTURE_LOGITS = [0.3, 2.0, -0.5]  # tokens, metrics, gnn: softmax 0.17, 0.75, 0.08


@pytest.fixture(scope="module")
def fusion_dir(tiny_gnn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fusion of a TF-IDF baseline, a code-metrics baseline and the tiny GNN, with set
    (uneven) mixture weights; the learned combiner is not what is tested here."""
    root = tmp_path_factory.mktemp("fusion")
    funcs, labels, _ = planted_data(60, seed=11)
    bases = {"gnn": tiny_gnn_dir}
    for name, cfg in (("tokens", BaselineConfig(min_df=1)),
                      ("metrics", BaselineConfig(features="metrics", trees=5,
                                                 tree_min_samples_leaf=2))):  # fmt: skip
        det = BaselineDetector(cfg)
        det.fit(funcs, labels)
        bases[name] = det.save(root / name)
    bases = {name: bases[name] for name in ("tokens", "metrics", "gnn")}
    net = FusionNet(3, hidden_dim=0)
    with torch.no_grad():
        net.weights.copy_(torch.tensor(MIXTURE_LOGITS))
    card = {"threshold": 0.5}
    return save_fusion(net, FusionConfig(base_models=list(bases), hidden_dim=0), root / "fused",
                       card, bases)  # fmt: skip


def test_fusion_scores_are_the_mixture_weighted_sum(fusion_dir: Path) -> None:
    detector = FusionDetector(fusion_dir)
    explainer = load_explainer(fusion_dir, detector=detector, ig_steps=8)
    assert isinstance(explainer, FusionExplainer) and explainer.explains_lines
    mixture = dict(zip(detector.base_names, detector.net.mixture(), strict=True))
    # metrics trees explain no lines: left out, the others' weights renormalised
    assert set(explainer.weights) == {"tokens", "gnn"}
    total = mixture["tokens"] + mixture["gnn"]
    assert explainer.weights["tokens"] == pytest.approx(mixture["tokens"] / total)
    assert explainer.weights["gnn"] == pytest.approx(mixture["gnn"] / total)

    funcs, _, _ = planted_data(8, seed=21)
    fused = explainer.line_scores(funcs)
    tokens = load_explainer(fusion_dir / "bases" / "tokens").line_scores(funcs)
    gnn = load_explainer(fusion_dir / "bases" / "gnn", ig_steps=8).line_scores(funcs)
    for f, t, g in zip(fused, tokens, gnn, strict=True):
        weights = explainer.weights
        expected = weights["tokens"] * unit_mass(t) + weights["gnn"] * unit_mass(g)
        np.testing.assert_allclose(f, expected, rtol=1e-9, atol=1e-12)
        if (t > 0).any():
            assert np.clip(unit_mass(t), 0, None).sum() == pytest.approx(1.0)


def test_fusion_finds_the_planted_line(fusion_dir: Path) -> None:
    funcs, labels, lines = planted_data(10, seed=31)
    vulnerable = [(f, line) for f, y, line in zip(funcs, labels, lines, strict=True) if y]
    scores = load_explainer(fusion_dir).line_scores([f for f, _ in vulnerable])
    for (text, line), per_line in zip(vulnerable, scores, strict=True):
        assert top_lines(text, per_line, 1)[0].line == line


class _NoLines(Explainer):
    """A base with no per-line signal (as code-metric trees)."""

    kind = "no_lines"
    explains_lines = False

    @classmethod
    def from_dir(cls, model_dir: Path, detector: Any, ig_steps: int) -> _NoLines:
        return cls()

    def line_scores(self, funcs: list[str], progress: bool = False) -> list[np.ndarray]:
        return [np.zeros(text.count("\n") + 1) for text in funcs]


def test_fusion_of_bases_without_line_signal_says_so() -> None:
    explainer = FusionExplainer(["a", "b"], [_NoLines(), _NoLines()], [0.4, 0.6])
    assert explainer.explains_lines is False and explainer.weights == {}
    assert [s.tolist() for s in explainer.line_scores(["x\ny", "z"])] == [[0.0, 0.0], [0.0]]


def test_unit_mass() -> None:
    assert unit_mass(np.array([2.0, -1.0, 2.0])).tolist() == [0.5, -0.25, 0.5]
    assert unit_mass(np.array([-1.0, -3.0])).tolist() == [-0.25, -0.75]
    assert unit_mass(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
