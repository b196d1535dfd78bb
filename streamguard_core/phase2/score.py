"""Score functions with every seed of trained models (phase-1 scoring, phase comparison)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamguard_core.config import seed_dir
from streamguard_core.evaluation.compare import model_seeds
from streamguard_core.models.registry import MODEL_CARD, load_detector
from streamguard_core.training.paths import RunPaths


class ScoringError(RuntimeError):
    """No usable model to score with, or a model that cannot be loaded."""


@dataclass(slots=True)
class SeedScores:
    """One model x seed's probabilities on the scored functions, and its threshold."""

    model: str
    seed: int
    model_dir: Path
    probabilities: np.ndarray
    threshold: float


def completed_seeds(root: str | Path, model: str) -> list[int]:
    """Seeds of ``model`` under ``root`` whose run completed and saved a model."""
    seeds = []
    for seed in model_seeds(root, model):
        paths = RunPaths(seed_dir(root, model, seed))
        status = json.loads(paths.status.read_text()) if paths.status.is_file() else {}
        if status.get("status") == "completed" and (paths.model / MODEL_CARD).is_file():
            seeds.append(seed)
    return seeds


def score_runs(
    root: str | Path,
    models: list[str],
    funcs: list[str],
    seeds: list[int] | None = None,
) -> list[SeedScores]:
    """Every completed seed of each of ``models`` under ``root`` scores ``funcs``.

    Raises:
        ScoringError: a model has no completed seed (among ``seeds`` when given).
    """
    out: list[SeedScores] = []
    for model in models:
        found = completed_seeds(root, model)
        chosen = [s for s in found if seeds is None or s in seeds]
        if not chosen:
            raise ScoringError(
                f"{Path(root) / model}: no completed seed with a saved model "
                f"(found {found or 'none'}{f', wanted {seeds}' if seeds else ''})"
            )
        for seed in chosen:
            model_dir = RunPaths(seed_dir(root, model, seed)).model
            detector = load_detector(model_dir)
            probs = np.asarray(detector.predict_proba(funcs), dtype=np.float64)
            out.append(SeedScores(model, seed, model_dir, probs, float(detector.threshold)))
    return out
