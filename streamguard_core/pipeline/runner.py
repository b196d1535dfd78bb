"""One production run of one model and seed, on this machine, into ``<root>/<model>/seed_<n>/``.

Whatever happens, the seed directory ends with ``run_status.json`` (``completed``,
``collapsed`` or ``failed`` with the reason), so the aggregate can count every run. The
Prefect task, the SageMaker entrypoint's local twin and ``bench/pipeline.py`` all call
:func:`train_one`.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamguard_core.io import atomic_write_json
from streamguard_core.pipeline.config import ModelKind, TrainingPlan

log = logging.getLogger("streamguard.pipeline")

RUN_STATUS = "run_status.json"


def seed_dir(output_root: str | Path, model: str, seed: int) -> Path:
    """``<output_root>/<model>/seed_<seed>``: where one run's files go."""
    return Path(output_root) / model / f"seed_{seed}"


def read_run_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``run_status.json``, or None when the run never wrote one."""
    import json

    path = Path(run_dir) / RUN_STATUS
    return json.loads(path.read_text()) if path.exists() else None


def neural_configs(kind: str, plan: TrainingPlan, seed: int, max_seq_len: int) -> tuple[Any, Any]:
    """The model config and TrainConfig of one neural run of ``plan``."""
    from streamguard_core.training.loop import TrainConfig

    model_cfg: Any
    if kind == "gnn":
        from streamguard_core.models.gnn import GNNConfig

        model_cfg = GNNConfig(hidden_dim=plan.gnn_hidden_dim, num_layers=plan.gnn_layers)
    elif kind == "transformer":
        from streamguard_core.models.transformer import TransformerConfig, tiny_shape

        model_cfg = TransformerConfig(
            model_name_or_path=plan.transformer_model,
            num_layers=plan.transformer_layers,
            max_seq_len=max_seq_len,
            **tiny_shape(plan.transformer_hidden_dim),
        )
    else:
        raise ValueError(f"not a neural model kind: {kind!r}")
    cfg = TrainConfig(
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        lr=plan.lr,
        early_stopping_patience=plan.early_stopping_patience,
        seed=seed,
        max_steps_per_epoch=plan.max_steps_per_epoch,
        num_threads=plan.num_threads,
        mixed_precision=plan.mixed_precision,
    )
    return model_cfg, cfg


def train_baseline_run(data_dir: str | Path, run_dir: str | Path, seed: int) -> dict[str, Any]:
    """Fit the TF-IDF baseline on ``data_dir``'s train split; the same files a neural run writes.

    Writes ``metrics.json`` (valid, and test when the data has one), ``predictions.jsonl`` (test,
    else valid), ``training_metadata.json`` (no curves) and ``model/``.
    """
    from streamguard_core.evaluation.metrics import classification_metrics
    from streamguard_core.io import write_jsonl
    from streamguard_core.models.baseline import BaselineConfig, BaselineDetector
    from streamguard_core.models.registry import load_labelled

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, _ = load_labelled(data_dir / "train")
    valid, _ = load_labelled(data_dir / "valid")
    config = BaselineConfig(seed=seed)
    detector = BaselineDetector(config)
    valid_metrics = detector.fit(
        [r.func for r in train], [r.label for r in train],
        [r.func for r in valid], [r.label for r in valid],
    )  # fmt: skip
    results: dict[str, Any] = {"valid": valid_metrics}
    scored, probs = valid, None
    test_records = data_dir / "test" / "records.jsonl"
    if test_records.exists() and test_records.stat().st_size:
        scored, _ = load_labelled(data_dir / "test")
        probs = detector.predict_proba([r.func for r in scored])
        results["test"] = classification_metrics(
            [r.label for r in scored], probs, detector.threshold
        )
    if probs is None:
        probs = detector.predict_proba([r.func for r in scored])
    write_jsonl(
        run_dir / "predictions.jsonl",
        (
            {"id": r.id, "label": int(r.label), "probability": float(p),
             "prediction": int(p >= detector.threshold)}
            for r, p in zip(scored, probs, strict=True)
        ),
    )  # fmt: skip
    detector.save(run_dir / "model", extra_card={"metrics": results})
    atomic_write_json(run_dir / "metrics.json", results)
    atomic_write_json(
        run_dir / "training_metadata.json",
        {"kind": "baseline", "history": [], "best_epoch": None,
         "threshold": detector.threshold, "fit_seconds": round(time.perf_counter() - t0, 2)},
    )  # fmt: skip
    atomic_write_json(
        run_dir / "exp_config.json",
        {"kind": "baseline", "model": config.model_dump(mode="json"), "data_dir": str(data_dir)},
    )
    return results


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def train_one(
    model: ModelKind,
    seed: int,
    data_dir: str | Path,
    output_root: str | Path,
    plan: TrainingPlan,
    device: str | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` with ``seed``; always writes and returns ``run_status.json``'s content.

    A run dir holding a valid 'latest' checkpoint is resumed (a retried or restarted run picks
    up where it stopped). Collapse and errors do not raise: they are the returned status, with
    the reason, so one bad seed never stops the others.
    """
    from streamguard_core.preprocess.dataset import load_metadata
    from streamguard_core.training.checkpoint import is_valid_checkpoint
    from streamguard_core.training.collapse import CollapseError
    from streamguard_core.training.loop import RunPaths

    run_dir = seed_dir(output_root, model, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_STATUS).unlink(missing_ok=True)  # a stale status must not outlive a rerun
    t0 = time.perf_counter()
    dev = "cpu" if model == "baseline" else device or _default_device()
    status: dict[str, Any] = {
        "model": model, "seed": seed, "status": "completed", "error": None, "wall_s": None,
        "backend": "local", "device": dev, "run_dir": str(run_dir), "cost": None,
    }  # fmt: skip
    try:
        if model == "baseline":
            train_baseline_run(data_dir, run_dir, seed)
        else:
            max_seq_len = int(load_metadata(data_dir)["config"]["preprocess"]["max_seq_len"])
            model_cfg, cfg = neural_configs(model, plan, seed, max_seq_len)
            from streamguard_core.training.run import train_neural

            resume = is_valid_checkpoint(RunPaths(run_dir).latest)
            train_neural(model, model_cfg, cfg, data_dir, run_dir, resume_run=resume,
                         device=device, on_epoch_end=on_epoch_end)  # fmt: skip
    except CollapseError as exc:
        status.update(status="collapsed", error=f"{exc.event.reason}: {exc.event.detail}")
    except Exception as exc:  # a failed seed is reported, never allowed to stop the others
        log.error("%s seed %d failed:\n%s", model, seed, traceback.format_exc())
        status.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    status["wall_s"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(run_dir / RUN_STATUS, status)
    return status
