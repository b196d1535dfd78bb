"""Line scores of a fusion detector: its base models' line scores, mixed as the combiner mixes
their logits.

Every base model that explains lines gives its own scores (its explainer, on the base model
directory under ``bases/``); each is divided by its positive mass (the sum of its positive line
scores; the absolute mass when nothing is positive) so that no base model dominates by scale,
then they are summed with the combiner's mixture weights (``FusionNet.mixture()``, the softmax
weights of its learned average) renormalised over the bases that explain lines. Bases without
per-line signal (code-metric trees) are left out of the mix; the combiner's MLP, which models
interactions between the bases' logits, has no per-line share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.explain.explainer import Explainer, check_scores, load_explainer
from streamguard_core.models.fusion import BASES, FusionDetector


def unit_mass(scores: np.ndarray) -> np.ndarray:
    """``scores`` divided by their positive mass (absolute mass when none is positive; all
    zeros stay zeros). Shapes: [n_lines] -> [n_lines]."""
    mass = float(np.clip(scores, 0, None).sum()) or float(np.abs(scores).sum())
    return scores / mass if mass > 0 else np.zeros_like(scores)


class FusionExplainer(Explainer):
    """Mixture-weighted, scale-normalised line scores of a fusion detector's base models."""

    kind = "fusion"

    def __init__(self, base_names: list[str], bases: list[Explainer], mixture: list[float]
                 ) -> None:  # fmt: skip
        if not len(base_names) == len(bases) == len(mixture):
            raise ValueError(
                f"{len(base_names)} base names, {len(bases)} explainers, {len(mixture)} weights"
            )
        self.base_names = base_names
        self.bases = bases
        explaining = [i for i, b in enumerate(bases) if b.explains_lines]
        self.explains_lines = bool(explaining)
        total = sum(mixture[i] for i in explaining)
        self.weights = {
            base_names[i]: (mixture[i] / total if total > 0 else 1 / len(explaining))
            for i in explaining
        }
        """Base name -> its weight in the line scores (explaining bases only; sum 1)."""

    @classmethod
    def from_dir(cls, model_dir: Path, detector: Any | None, ig_steps: int) -> FusionExplainer:
        """Reuse ``detector``'s base detectors when it is a loaded fusion detector."""
        if not all(hasattr(detector, name) for name in ("bases", "base_names", "net")):
            detector = FusionDetector(model_dir)
        assert detector is not None
        bases = [
            load_explainer(model_dir / BASES / name, detector=base, ig_steps=ig_steps)
            for name, base in zip(detector.base_names, detector.bases, strict=True)
        ]
        return cls(list(detector.base_names), bases, list(detector.net.mixture()))

    def line_scores(self, funcs: list[str], progress: bool = False) -> list[np.ndarray]:
        """Sum over explaining bases of weight x unit-mass line scores (zeros when none)."""
        from streamguard_core.explain.lines import line_starts

        out = [np.zeros(len(line_starts(text)), dtype=np.float64) for text in funcs]
        for name, base in zip(self.base_names, self.bases, strict=True):
            if name not in self.weights:
                continue
            weight = self.weights[name]
            for total, scores in zip(out, base.line_scores(funcs, progress), strict=True):
                total += weight * unit_mass(scores)
        return check_scores(funcs, out)
