"""Train one detector of any kind on a processed data set: build, (find LR), fit, evaluate, save.

:func:`train_job` is the one function behind every launcher: ``streamguard train``, the local
backend's per-job process and the SageMaker entrypoint all call it (through
:func:`streamguard_core.training.job.run_job`). Exit-code contract of the CLI: 0 ok,
1 failure, 2 usage, 3 collapse (``collapse_report.json`` written).
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from streamguard_core.config import BaselineConfig, TrainConfig, TrainJobSpec
from streamguard_core.io import atomic_write_json
from streamguard_core.models.adapters import adapter_for, resolve_device
from streamguard_core.models.registry import MODEL_CARD
from streamguard_core.preprocess.dataset import ProcessedDataset
from streamguard_core.redact import RedactingFilter
from streamguard_core.training.batch_size import auto_batch_size
from streamguard_core.training.checkpoint import is_valid_checkpoint
from streamguard_core.training.collapse import CollapseError, write_collapse_report
from streamguard_core.training.folds import assign_folds
from streamguard_core.training.loop import (
    Batches,
    evaluate_best,
    fit,
    predict,
    resume,
    seed_everything,
    setup,
    write_metadata,
    write_predictions,
)
from streamguard_core.training.paths import RunPaths

if TYPE_CHECKING:
    from streamguard_core.training.distributed import DistContext


class RunExistsError(RuntimeError):
    """The output directory already holds a run and --resume was not given."""


def resolve_spec(spec: TrainJobSpec) -> TrainJobSpec:
    """The spec with what the data set decides filled in (a transformer's ``max_seq_len``)."""
    model = spec.model
    if model.kind != "transformer":
        return spec
    data_len = ProcessedDataset(spec.data_dir).max_seq_len
    if model.max_seq_len is None:
        return spec.model_copy(update={"model": model.model_copy(update={"max_seq_len": data_len})})
    if model.max_seq_len < data_len:
        raise ValueError(
            f"transformer max_seq_len {model.max_seq_len} is shorter than the data set's "
            f"{data_len} tokens ({spec.data_dir}): set preprocessing.max_seq_len to "
            f"{model.max_seq_len} (its trimming keeps the risky lines), or leave the model's empty"
        )
    return spec


def fold_indices(
    spec: TrainJobSpec, data: ProcessedDataset
) -> tuple[np.ndarray, np.ndarray | None]:
    """Train-split indices a job trains on, and those it predicts out of fold (None: no fold).

    Raises:
        FoldError: the train split cannot be cut into ``spec.fold.count`` folds.
    """
    train = data.split("train")
    everything = np.arange(len(train.records))
    if spec.fold is None:
        return everything, None
    folds = assign_folds(train.records, train.labels, spec.fold.count, spec.fold.seed)
    return everything[folds != spec.fold.index], everything[folds == spec.fold.index]


def save_detector(spec: TrainJobSpec, model: torch.nn.Module, out: Path, card: dict[str, Any]
                  ) -> Path:  # fmt: skip
    """The final model directory: weights in the kind's own format plus ``model_card.json``."""
    data_dir = Path(spec.data_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    adapter_for(spec.model.kind).save(model, spec.model, data_dir, out)
    # the tokenizer and preprocessing settings travel with the model (evaluate, scan)
    shutil.copytree(data_dir / "tokenizer", out, dirs_exist_ok=True)
    atomic_write_json(out / MODEL_CARD, card)
    return out


def _file_log(paths: RunPaths) -> tuple[logging.Logger, logging.Handler]:
    paths.root.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())  # training.log travels (S3, artifacts): no secrets
    logger = logging.getLogger("streamguard")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, handler


def _write_exp_config(paths: RunPaths, spec: TrainJobSpec, resumed: bool) -> None:
    atomic_write_json(paths.exp_config, {**spec.model_dump(mode="json"), "resumed": resumed})


def train_job(
    spec: TrainJobSpec,
    resume_run: bool = False,
    device: str | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dist: DistContext | None = None,
) -> dict[str, Any]:
    """Train ``spec`` (any kind) into ``spec.run_dir``; returns the metrics per split.

    ``dist``: this process is one rank of a data-parallel group (GNN and transformer only).
    """
    spec = resolve_spec(spec)
    if spec.model.kind == "baseline":
        return train_baseline(spec)
    if spec.model.kind == "fusion":
        from streamguard_core.training.fusion import train_fusion

        return train_fusion(spec)
    return train_neural(spec, resume_run, device, on_epoch_end, should_stop, dist)


def train_baseline(spec: TrainJobSpec) -> dict[str, Any]:
    """Fit a baseline-kind detector (TF-IDF tokens or chars, or code-metrics trees) on the train
    split (its K-1 folds for a fold job); the same files a neural run writes.

    Writes ``metrics.json`` (valid, and test when the data has one), ``predictions.jsonl`` (test,
    else valid), ``training_metadata.json`` (no curves), ``exp_config.json`` and ``model/``.
    """
    from streamguard_core.evaluation.metrics import classification_metrics
    from streamguard_core.models.baseline import BaselineDetector

    assert isinstance(spec.model, BaselineConfig)
    data, paths = ProcessedDataset(spec.data_dir), RunPaths(spec.run_dir)
    logger, handler = _file_log(paths)
    try:
        t0 = time.perf_counter()
        train, valid = data.split("train"), data.split("valid")
        kept, held_out = fold_indices(spec, data)
        train_records = [train.records[i] for i in kept]
        weights = np.asarray([float(r.get("weight", 1.0)) for r in train_records])
        detector = BaselineDetector(spec.model, seed=spec.seed)
        results: dict[str, Any] = {
            "valid": detector.fit(
                [r["func"] for r in train_records], train.labels[kept],
                [r["func"] for r in valid.records], valid.labels,
                sample_weight=weights if spec.train.use_weights else None,
                threshold_objective=spec.train.threshold_objective,
                target_precision=spec.train.target_precision,
            )
        }  # fmt: skip
        valid_probs = detector.predict_proba([r["func"] for r in valid.records])
        write_predictions(paths.valid_predictions, valid.records, valid_probs, detector.threshold)
        if held_out is not None:
            held = [train.records[i] for i in held_out]
            write_predictions(paths.oof_predictions, held,
                              detector.predict_proba([r["func"] for r in held]),
                              detector.threshold)  # fmt: skip
        scored, probs = valid, valid_probs
        if data.has_split("test"):
            scored = data.split("test")
            probs = detector.predict_proba([r["func"] for r in scored.records])
            results["test"] = classification_metrics(scored.labels, probs, detector.threshold)
        write_predictions(paths.predictions, scored.records, probs, detector.threshold)
        if paths.model.exists():
            shutil.rmtree(paths.model)
        detector.save(paths.model, extra_card={
            "metrics": results, "data_fingerprint": data.fingerprint,
            "train": spec.train.model_dump(mode="json"),
        })  # fmt: skip
        atomic_write_json(paths.metrics, results)
        atomic_write_json(
            paths.metadata,
            {"kind": "baseline", "history": [], "best_epoch": None, "device": "cpu",
             "threshold": detector.threshold, **detector.metadata,
             "fit_seconds": round(time.perf_counter() - t0, 2)},
        )  # fmt: skip
        _write_exp_config(paths, spec, resumed=False)
        logger.info("baseline: %s", {k: v.get("f1") for k, v in results.items()})
        return results
    finally:
        logger.removeHandler(handler)
        handler.close()


def train_neural(
    spec: TrainJobSpec,
    resume_run: bool = False,
    device: str | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    dist: DistContext | None = None,
) -> dict[str, Any]:
    """Train a GNN or transformer job into ``spec.run_dir``; returns metrics per split.

    ``on_epoch_end`` receives each epoch's history row (progress reporting); ``should_stop`` is
    polled after every optimizer step and, when it answers True, the loop saves 'latest' and
    raises ``TrainingInterrupted`` (a later ``resume_run=True`` continues exactly).

    With ``dist`` (one rank of a DDP group, see :mod:`~streamguard_core.training.distributed`)
    every rank trains its shard of each batch; the LR finder and the automatic batch size run on
    rank 0 and are broadcast; only rank 0 logs, evaluates and writes, and the other ranks return
    ``{}`` once training is over.

    Raises:
        RunExistsError: ``run_dir`` holds a checkpoint and ``resume_run`` is False.
        CollapseError: the run collapsed (``collapse_report.json`` is written first).
    """
    spec = resolve_spec(spec)
    kind, model_cfg, cfg = spec.model.kind, spec.model, spec.train
    data_dir, paths = Path(spec.data_dir), RunPaths(spec.run_dir)
    data = ProcessedDataset(data_dir)
    if is_valid_checkpoint(paths.latest) and not resume_run:
        raise RunExistsError(
            f"{paths.root} already holds a run; pass --resume to continue it or choose a new "
            "--output-dir"
        )
    adapter = adapter_for(kind)
    main = dist is None or dist.is_main
    logger, handler = _file_log(paths) if main else (None, None)
    try:
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        model, pad_id = adapter.build(model_cfg, data_dir)
        batch_note = None
        if cfg.auto_batch_size:
            if main:
                cfg, batch_note = auto_batch_size(kind, model, model_cfg, cfg, data_dir, pad_id,
                                                  device)  # fmt: skip
            if dist is not None:
                cfg, batch_note = dist.broadcast((cfg, batch_note))
        lr, lr_source, lr_report = cfg.lr, "config", None
        if lr is None and cfg.lr_finder:
            if main:
                found = run_lr_finder(kind, model, model_cfg, cfg, data_dir, pad_id, device)
                lr, lr_source, lr_report = found.lr, found.source, found.to_dict()
            if dist is not None:
                lr, lr_source, lr_report = dist.broadcast((lr, lr_source, lr_report))
        elif lr is None:
            lr, lr_source = adapter.default_lr(model_cfg)
        kept, held_out = fold_indices(spec, data)
        state = setup(kind, model, data_dir, paths.root, cfg, device=device, pad_id=pad_id,
                      lr=lr, lr_source=lr_source, train_subset=None if held_out is None else kept,
                      shuffle_subset=True, dist=dist)  # fmt: skip
        state.notes.update({"lr_finder": lr_report, "auto_batch_size": batch_note})
        state.on_epoch_end, state.should_stop = on_epoch_end, should_stop
        resumed = resume(state) if resume_run else False
        if main:
            _write_exp_config(paths, spec, resumed)
        try:
            summary = fit(state)
        except CollapseError as exc:
            if main:
                write_collapse_report(
                    paths.collapse_report, exc.event,
                    {"kind": kind, "seed": cfg.seed, "history_tail": state.history[-3:]},
                )  # fmt: skip
            raise
        if not main:
            return {}
        results = evaluate_best(state, data_dir)
        if held_out is not None:
            held = Batches(data.split("train"), kind, pad_id, subset=held_out)
            probs = predict(kind, state.model, held, state.device, cfg.batch_size)
            write_predictions(paths.oof_predictions, [held.split.records[i] for i in held_out],
                              probs, state.best_threshold)  # fmt: skip
        write_metadata(state)
        card = {
            "kind": kind,
            "config": model_cfg.model_dump(mode="json"),
            "train": cfg.model_dump(mode="json"),
            "threshold": state.best_threshold,
            "metrics": results,
            "best_epoch": summary["best_epoch"],
            "data_fingerprint": data.fingerprint,
            "preprocess": data.model_preprocess_config(),
        }
        save_detector(spec, state.model, paths.model, card)
        return results
    finally:
        if logger is not None and handler is not None:
            logger.removeHandler(handler)
            handler.close()


def run_lr_finder(
    kind: str, model: torch.nn.Module, model_cfg: Any, cfg: TrainConfig, data_dir: Path,
    pad_id: int, device: str | None,
) -> Any:  # fmt: skip
    """LR range test on the train split, cached by (kind, model config, data, batch size).

    The model's weights and the RNG state are restored afterwards, so the run that follows
    starts exactly as it would have without the test.
    """
    from streamguard_core.preprocess.dataset import ProcessedSplit
    from streamguard_core.training.checkpoint import rng_state, set_rng_state
    from streamguard_core.training.loop import Batches, class_weights, epoch_order, forward_logits
    from streamguard_core.training.lr_finder import find_lr

    dev = resolve_device(device)
    saved_weights = copy.deepcopy(model.state_dict())
    saved_rng = rng_state()
    model.to(dev).train()
    data = Batches(ProcessedSplit(data_dir, "train"), kind, pad_id)
    weights = class_weights(data.labels, cfg.class_weight_multiplier).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7, weight_decay=cfg.weight_decay)
    order = epoch_order(len(data), cfg.seed + 1_000_003, 0)  # not the order of any real epoch
    position = [0]

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = position[0] % max(1, len(data) - cfg.batch_size + 1)
        position[0] += cfg.batch_size
        batch = data.make(order[start : start + cfg.batch_size], dev)
        loss = torch.nn.functional.cross_entropy(
            forward_logits(kind, model, batch).float(), batch["labels"], weight=weights
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        return float(loss.detach())

    key = {
        "kind": kind,
        "model": model_cfg.model_dump(mode="json"),
        "data": ProcessedDataset(data_dir).fingerprint,
        "batch_size": cfg.batch_size,
        "steps": cfg.lr_finder_steps,
        "seed": cfg.seed,
    }
    try:
        return find_lr(kind, step, Path(cfg.lr_cache_dir).expanduser(), key,
                       num_steps=cfg.lr_finder_steps)  # fmt: skip
    finally:
        model.load_state_dict(saved_weights)
        set_rng_state(saved_rng)
