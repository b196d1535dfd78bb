"""Train one fusion job: gather the base models' OOF and validation predictions of a seed,
fit the combiner (:mod:`streamguard_core.models.fusion`), tune its threshold, write a run dir.

Inputs, for seed ``s`` and every fused base model ``m`` under ``runs_root``::

    oof/<m>/seed_<s>/fold_<k>/oof_predictions.jsonl   train functions of fold k (every k)
    <m>/seed_<s>/valid_predictions.jsonl              the full model on valid (early stopping)
    <m>/seed_<s>/predictions.jsonl                    the full model on test (when there is one)
    <m>/seed_<s>/model/                               copied into the fusion model

Nothing is fused over missing predictions: a base run (full or fold) that did not complete, or
OOF predictions that do not cover every train function exactly once, raise
:class:`FusionInputError` naming the run and why, and the fusion run of that seed fails with it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.config import FusionConfig, TrainJobSpec, oof_dir, seed_dir
from streamguard_core.evaluation.metrics import classification_metrics
from streamguard_core.io import atomic_write_json, read_jsonl
from streamguard_core.preprocess.dataset import ProcessedDataset
from streamguard_core.training.paths import RunPaths


class FusionInputError(RuntimeError):
    """A base model's predictions that fusion needs are missing, incomplete or inconsistent."""


def _completed(run_dir: Path) -> None:
    from streamguard_core.training.job import read_run_status

    status = read_run_status(run_dir)
    if status is None:
        raise FusionInputError(f"{run_dir}: the base run never finished (no run_status.json)")
    if status.status != "completed":
        raise FusionInputError(f"{run_dir}: the base run {status.status}: {status.error}")


def _read_predictions(path: Path) -> dict[str, tuple[int, float]]:
    if not path.is_file():
        raise FusionInputError(f"{path}: missing")
    out: dict[str, tuple[int, float]] = {}
    for row in read_jsonl(path):
        key = str(row["id"])
        if key in out:
            raise FusionInputError(f"{path}: function {key} predicted twice")
        out[key] = (int(row["label"]), float(row["probability"]))
    return out


def oof_predictions(runs_root: Path, name: str, seed: int) -> dict[str, tuple[int, float]]:
    """(label, probability) per train function id from every fold run of ``name``/``seed``."""
    base = oof_dir(runs_root, name, seed, 0).parent
    folds = sorted(base.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    if not folds:
        raise FusionInputError(f"{base}: no out-of-fold runs of {name} seed {seed}")
    out: dict[str, tuple[int, float]] = {}
    for fold in folds:
        _completed(fold)
        rows = _read_predictions(RunPaths(fold).oof_predictions)
        twice = sorted(set(rows) & set(out))
        if twice:
            raise FusionInputError(f"{fold}: {len(twice)} functions also in another fold")
        out.update(rows)
    return out


def _matrix(
    per_model: dict[str, dict[str, tuple[int, float]]], ids: list[str], what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [n, M] and labels [n] for ``ids``; every model must cover every id."""
    columns = []
    labels = None
    for name, rows in per_model.items():
        missing = [i for i in ids if i not in rows]
        if missing:
            raise FusionInputError(
                f"{what}: {name} has no prediction for {len(missing)} of {len(ids)} functions "
                f"(e.g. {missing[:3]})"
            )
        columns.append([rows[i][1] for i in ids])
        these = np.asarray([rows[i][0] for i in ids], dtype=np.int64)
        if labels is not None and not np.array_equal(labels, these):
            raise FusionInputError(f"{what}: {name}'s labels disagree with the other models'")
        labels = these
    assert labels is not None
    return np.asarray(columns, dtype=np.float64).T, labels


def train_fusion(spec: TrainJobSpec) -> dict[str, Any]:
    """Fit and save the fusion model of ``spec.seed``; returns metrics per split (like the
    other kinds: ``metrics.json``, ``predictions.jsonl``, ``valid_predictions.jsonl``, model/).

    Raises:
        FusionInputError: base predictions are missing, incomplete or inconsistent.
    """
    from streamguard_core.evaluation.metrics import tune_threshold
    from streamguard_core.models.fusion import fit_fusion, predict_fusion, save_fusion, to_logits
    from streamguard_core.training.loop import write_predictions

    cfg = spec.model
    assert isinstance(cfg, FusionConfig)
    if not cfg.runs_root or not cfg.base_models:
        raise FusionInputError("a fusion job needs model.runs_root and model.base_models")
    t0 = time.perf_counter()
    root, seed, paths = Path(cfg.runs_root), spec.seed, RunPaths(spec.run_dir)
    for stale in (paths.metrics, paths.predictions, paths.valid_predictions):
        stale.unlink(missing_ok=True)  # a failed rerun must not leave the last run's outputs
    if paths.model.exists():
        shutil.rmtree(paths.model)
    data = ProcessedDataset(spec.data_dir)
    train_split = data.split("train")
    train_ids = [str(r["id"]) for r in train_split.records]
    weights_by_id = {str(r["id"]): float(r.get("weight", 1.0)) for r in train_split.records}

    oof = {m: oof_predictions(root, m, seed) for m in cfg.base_models}
    for name, rows in oof.items():
        extra = set(rows) - set(train_ids)
        if extra:
            raise FusionInputError(
                f"OOF predictions of {name} seed {seed} hold {len(extra)} functions that are not "
                "in this data set's train split (were the base models trained on other data?)"
            )
    train_p, train_y = _matrix(oof, train_ids, f"OOF train (seed {seed})")

    full_runs = {m: seed_dir(root, m, seed) for m in cfg.base_models}
    for run in full_runs.values():
        _completed(run)
    valid = {m: _read_predictions(RunPaths(d).valid_predictions) for m, d in full_runs.items()}
    valid_records = data.split("valid").records
    valid_ids = [str(r["id"]) for r in valid_records]
    valid_p, valid_y = _matrix(valid, valid_ids, f"valid (seed {seed})")

    weights = np.asarray([weights_by_id[i] for i in train_ids]) if spec.train.use_weights else None
    net, history = fit_fusion(cfg, to_logits(train_p), train_y, to_logits(valid_p), valid_y,
                              seed, weights)  # fmt: skip
    valid_probs = predict_fusion(net, to_logits(valid_p))
    choice = tune_threshold(
        valid_y, valid_probs, spec.train.threshold_objective, spec.train.target_precision
    )
    threshold = choice.threshold
    results: dict[str, Any] = {
        "valid": {**classification_metrics(valid_y, valid_probs, threshold), **choice.record()}
    }
    write_predictions(paths.valid_predictions, valid_records, valid_probs, threshold)
    scored_records, scored_probs = valid_records, valid_probs
    if data.has_split("test") and len(data.split("test").records):
        test_records = data.split("test").records
        test_ids = [str(r["id"]) for r in test_records]
        test = {m: _read_predictions(RunPaths(d).predictions) for m, d in full_runs.items()}
        test_p, test_y = _matrix(test, test_ids, f"test (seed {seed})")
        scored_records, scored_probs = test_records, predict_fusion(net, to_logits(test_p))
        results["test"] = classification_metrics(test_y, scored_probs, threshold)
    write_predictions(paths.predictions, scored_records, scored_probs, threshold)

    base_auc = {m: classification_metrics(valid_y, valid_p[:, j], 0.5)["roc_auc"]
                for j, m in enumerate(cfg.base_models)}  # fmt: skip
    card = {
        "threshold": threshold,
        "seed": seed,
        "metrics": results,
        "base_valid_roc_auc": base_auc,
        "oof_train_functions": len(train_ids),
        "data_fingerprint": data.fingerprint,
        "train": spec.train.model_dump(mode="json"),
    }
    save_fusion(net, cfg, paths.model, card,
                {m: RunPaths(d).model for m, d in full_runs.items()})  # fmt: skip
    atomic_write_json(paths.metrics, results)
    best = min(range(len(history)), key=lambda i: history[i]["valid_loss"])
    atomic_write_json(
        paths.metadata,
        {"kind": "fusion", "history": [], "fusion_history": history, "best_epoch": best,
         "threshold": threshold, "mixture": dict(zip(cfg.base_models, net.mixture(), strict=True)),
         "base_valid_roc_auc": base_auc, "device": "cpu",
         "fit_seconds": round(time.perf_counter() - t0, 2)},
    )  # fmt: skip
    atomic_write_json(paths.exp_config, {**spec.model_dump(mode="json"), "resumed": False})
    return results
