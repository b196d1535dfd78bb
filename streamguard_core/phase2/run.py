"""The steps of phase 2 as plain functions (the ``phase2`` flow calls them through tasks).

Layout of ``Phase2Config.output_root``::

    split.json                   collected projects: train (weighted, trained on) vs test
    (scores)                     every phase-1 scorer's probabilities (the score task's result)
    noise/weighted.jsonl         kept collected rows with weight, tier and confidence
    noise/dropped.jsonl          the rest, each with its confidence (counted, not lost)
    noise/noise_report.json|md   what was kept, why, per source and per project
    merged/{train,valid,test}.jsonl, merge_summary.json, distribution.json|md
    retrain/                     the phase-2 pipeline run (models x seeds, report)
    comparison/                  phase 1 vs phase 2 on the same items (phase_comparison.*)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.config import FieldMap, Phase2Config, PipelineConfig, seed_dir
from streamguard_core.evaluation.compare import discover_runs
from streamguard_core.io import read_jsonl
from streamguard_core.models.registry import MODEL_CARD
from streamguard_core.phase2.score import completed_seeds, score_runs
from streamguard_core.training.paths import RunPaths


def model_kind(root: str | Path, model: str) -> str | None:
    """The kind of ``model``'s saved detector under ``root`` (from a completed seed's card)."""
    for seed in completed_seeds(root, model):
        card = RunPaths(seed_dir(root, model, seed)).model / MODEL_CARD
        return json.loads(card.read_text()).get("kind")
    return None


def default_scorers(phase1_root: str | Path) -> list[str]:
    """Every base model of the phase-1 run with a completed seed (fusion is left out: it is an
    ensemble of the others already)."""
    models, _ = discover_runs(phase1_root)
    return [m for m in models if model_kind(phase1_root, m) not in (None, "fusion")]


def unique_changes(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """One row per version of a change: (repo, fix commit, file, function, label).

    A fix commit that closes several advisories gives the same rows once per advisory; kept
    as they are, a change would count several times in the noise report and have several
    chances to be sampled. The first row is kept, with ``also_in`` listing the other
    advisories' ids. Returns the rows and how many repeats were folded.
    """
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row.get(k) for k in ("repo", "fix_commit", "file", "function", "target"))
        if key in first:
            first[key].setdefault("also_in", []).append(row.get("vuln_id"))
        else:
            first[key] = dict(row)
    return list(first.values()), len(rows) - len(first)


def split_rows(
    rows: list[dict[str, Any]], train_projects: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows of the train projects, rows of the others)."""
    keep = set(train_projects)
    train = [r for r in rows if r.get("project") in keep]
    test = [r for r in rows if r.get("project") not in keep]
    return train, test


def score_collected(
    phase1_root: str | Path, scorers: list[str], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Every completed seed of every scorer scores ``rows``: ids, scorers and [scorers x rows]
    probabilities (JSON-safe, so a Prefect task can persist and cache it)."""
    scores = score_runs(phase1_root, scorers, [r["func"] for r in rows])
    return {
        "phase1_root": str(phase1_root),
        "ids": [str(r["id"]) for r in rows],
        "scorers": [{"model": s.model, "seed": s.seed, "threshold": s.threshold} for s in scores],
        "probabilities": [s.probabilities.round(6).tolist() for s in scores],
    }


def aligned_probabilities(scores: dict[str, Any], rows: list[dict[str, Any]]) -> np.ndarray:
    """The [scorers x rows] probabilities in the order of ``rows`` (ids must match)."""
    index = {rid: i for i, rid in enumerate(scores["ids"])}
    missing = [r["id"] for r in rows if str(r["id"]) not in index]
    if missing:
        raise ValueError(f"{len(missing)} rows were not scored (e.g. {missing[0]})")
    order = np.asarray([index[str(r["id"])] for r in rows], dtype=np.int64)
    return np.asarray(scores["probabilities"], dtype=np.float64)[:, order]


def phase1_records(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of a processed split (``[]`` when the split is missing)."""
    path = Path(data_dir) / split / "records.jsonl"
    return list(read_jsonl(path)) if path.exists() else []


def retrain_config(config: Phase2Config, inputs: dict[str, str]) -> PipelineConfig:
    """The phase-2 pipeline run: ``config.retrain`` on the merged inputs, with weights on."""
    raw = config.retrain.model_dump()
    raw["data"].update(
        inputs=[f"{split}={path}" for split, path in inputs.items()],
        format="jsonl",
        fields=FieldMap(id="id").model_dump(),
        split_strategy="explicit",
        codexglue_splits=None,
    )
    raw["plan"]["train"]["use_weights"] = True
    raw["output_root"] = str(Path(config.output_root) / "retrain")
    # phase 2's output_root is already its own run directory: its retraining owns .../retrain
    raw["run_id"] = None
    return PipelineConfig.model_validate(raw)
