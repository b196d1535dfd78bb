"""Train one neural detector on a processed data set: build, (find LR), fit, evaluate, save.

``train_neural`` is what ``streamguard train gnn|transformer`` and later the Prefect task and
the SageMaker entrypoint call. Exit-code contract of the CLI: 0 ok, 1 failure, 2 usage,
3 collapse (``collapse_report.json`` written).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamguard_core.io import atomic_write_json
from streamguard_core.preprocess.dataset import load_metadata
from streamguard_core.training.checkpoint import is_valid_checkpoint
from streamguard_core.training.collapse import CollapseError, write_collapse_report
from streamguard_core.training.loop import (
    RunPaths,
    TrainConfig,
    evaluate_best,
    fit,
    resume,
    seed_everything,
    setup,
    write_metadata,
)

TINY_TRANSFORMER_LR = 5e-4


class RunExistsError(RuntimeError):
    """The output directory already holds a run and --resume was not given."""


def build_model(kind: str, model_cfg: Any, data_dir: Path) -> tuple[torch.nn.Module, int]:
    """The model for ``kind`` and the padding id its batches need."""
    if kind == "gnn":
        from streamguard_core.models.gnn import build_gnn

        vocab = json.loads((data_dir / "node_types.json").read_text())["node_types"]
        return build_gnn(model_cfg, len(vocab)), 0
    from transformers import AutoTokenizer

    from streamguard_core.models.transformer import build_transformer_classifier

    tokenizer = AutoTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    return build_transformer_classifier(model_cfg, data_dir / "tokenizer"), int(
        tokenizer.pad_token_id
    )


def save_detector(kind: str, model: torch.nn.Module, model_cfg: Any, data_dir: Path, out: Path,
                  card: dict[str, Any]) -> Path:  # fmt: skip
    """The final model directory: weights in the kind's own format plus ``model_card.json``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if kind == "gnn":
        from streamguard_core.models.gnn import GNNClassifier, save_gnn

        vocab = json.loads((data_dir / "node_types.json").read_text())["node_types"]
        assert isinstance(model, GNNClassifier)
        save_gnn(model, model_cfg, len(vocab), out)
        shutil.copy(data_dir / "node_types.json", out / "node_types.json")
    else:
        model.save_pretrained(str(out))  # type: ignore[operator]
    # the tokenizer and preprocessing settings travel with the model (evaluate, scan)
    shutil.copytree(data_dir / "tokenizer", out, dirs_exist_ok=True)
    atomic_write_json(out / "model_card.json", card)
    return out


def train_neural(
    kind: str,
    model_cfg: Any,
    cfg: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    resume_run: bool = False,
    device: str | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train ``kind`` on ``data_dir`` (a processed data set) into ``run_dir``; returns metrics.

    ``on_epoch_end`` receives each epoch's history row (progress reporting); ``should_stop`` is
    polled after every optimizer step and, when it answers True, the loop saves 'latest' and
    raises ``TrainingInterrupted`` (a later ``resume_run=True`` continues exactly).

    Raises:
        RunExistsError: ``run_dir`` holds a checkpoint and ``resume_run`` is False.
        CollapseError: the run collapsed (``collapse_report.json`` is written first).
    """
    data_dir, paths = Path(data_dir), RunPaths(Path(run_dir))
    if is_valid_checkpoint(paths.latest) and not resume_run:
        raise RunExistsError(
            f"{paths.root} already holds a run; pass --resume to continue it or choose a new "
            "--output-dir"
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("streamguard")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        seed_everything(cfg.seed)
        model, pad_id = build_model(kind, model_cfg, data_dir)
        batch_note = None
        if cfg.auto_batch_size:
            cfg, batch_note = auto_batch_size(kind, model, model_cfg, cfg, data_dir, pad_id,
                                              device)  # fmt: skip
        lr, lr_source, lr_report = cfg.lr, "config", None
        if lr is None and cfg.lr_finder:
            found = run_lr_finder(kind, model, model_cfg, cfg, data_dir, pad_id, device)
            lr, lr_source, lr_report = found.lr, found.source, found.to_dict()
        elif lr is None and kind == "transformer" and model_cfg.model_name_or_path == "tiny":
            # 2.5e-5 is a fine-tuning rate for a pretrained CodeBERT; a RoBERTa trained from
            # scratch barely moves at it (Juliet: 5e-4 reached test F1 0.93)
            lr, lr_source = TINY_TRANSFORMER_LR, "default (tiny transformer from scratch)"
        elif lr is None:
            lr_source = "default"
        state = setup(kind, model, data_dir, paths.root, cfg, device=device, pad_id=pad_id,
                      lr=lr, lr_source=lr_source)  # fmt: skip
        state.notes.update({"lr_finder": lr_report, "auto_batch_size": batch_note})
        state.on_epoch_end, state.should_stop = on_epoch_end, should_stop
        resumed = resume(state) if resume_run else False
        atomic_write_json(
            paths.exp_config,
            {"kind": kind, "model": model_cfg.model_dump(mode="json"),
             "train": cfg.model_dump(mode="json"), "data_dir": str(data_dir),
             "resumed": resumed},
        )  # fmt: skip
        try:
            summary = fit(state)
        except CollapseError as exc:
            write_collapse_report(
                paths.collapse_report, exc.event,
                {"kind": kind, "seed": cfg.seed, "history_tail": state.history[-3:]},
            )  # fmt: skip
            raise
        results = evaluate_best(state, data_dir)
        write_metadata(state)
        card = {
            "kind": kind,
            "config": model_cfg.model_dump(mode="json"),
            "train": cfg.model_dump(mode="json"),
            "threshold": state.best_threshold,
            "metrics": results,
            "best_epoch": summary["best_epoch"],
            "data_fingerprint": _fingerprint(data_dir),
            "preprocess": _preprocess_config(data_dir),
        }
        save_detector(kind, state.model, model_cfg, data_dir, paths.model, card)
        return results
    finally:
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

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        "data": _fingerprint(data_dir),
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


def auto_batch_size(
    kind: str, model: torch.nn.Module, model_cfg: Any, cfg: TrainConfig, data_dir: Path,
    pad_id: int, device: str | None,
) -> tuple[TrainConfig, dict[str, Any]]:  # fmt: skip
    """A batch size for the memory budget: from graph statistics (GNN) or a CUDA probe."""
    from streamguard_core.preprocess.run import recommend_batch_size

    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    budget = cfg.memory_budget_mb or (
        0.8 * torch.cuda.get_device_properties(0).total_memory / 2**20 if cuda else 2048.0
    )
    note: dict[str, Any] = {"memory_budget_mb": round(budget, 1), "requested": cfg.batch_size}
    if kind == "gnn":
        stats = load_metadata(data_dir)["graph_stats"]
        sizing = recommend_batch_size(
            stats["train"].get("nodes_p95", 0.0), stats["train"].get("edges_p95", 0.0), budget,
            model_cfg.hidden_dim, model_cfg.num_layers,
        )  # fmt: skip
        note.update(sizing)
        batch = int(sizing["recommended_batch_size"])
    elif cuda:
        batch = _probe_transformer_batch(model, cfg, data_dir, pad_id, device or "cuda")
        note["method"] = "CUDA probe: one forward+backward on the longest sequences, halving on OOM"
    else:
        batch = cfg.batch_size
        note["method"] = "no probe on CPU: the configured batch size is kept"
    note["chosen"] = batch
    return cfg.model_copy(update={"batch_size": batch}), note


def _probe_transformer_batch(
    model: torch.nn.Module, cfg: TrainConfig, data_dir: Path, pad_id: int, device: str
) -> int:
    from streamguard_core.preprocess.dataset import ProcessedSplit
    from streamguard_core.training.loop import Batches, forward_logits

    data = Batches(ProcessedSplit(data_dir, "train"), "transformer", pad_id)
    longest = np.argsort([-len(data.split.input_ids(i)) for i in range(len(data))])
    model.to(device).train()
    batch = cfg.batch_size
    while batch >= 1:
        try:
            b = data.make(longest[:batch], torch.device(device))
            forward_logits("transformer", model, b).float().sum().backward()
            model.zero_grad(set_to_none=True)
            return batch
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            batch //= 2
    raise RuntimeError("not even one sequence fits in GPU memory")


def _preprocess_config(data_dir: Path) -> dict[str, Any]:
    """The data set's preprocessing settings, minus what only mattered for building it."""
    cfg = dict(load_metadata(data_dir)["config"]["preprocess"])
    for key in ("tokenizer", "workers", "quick_test"):
        cfg.pop(key, None)
    return cfg


def _fingerprint(data_dir: Path) -> dict[str, Any]:
    """What identifies the training data: input file hashes and kept counts per split."""
    meta = load_metadata(data_dir)
    return {"inputs_sha256": meta.get("inputs", {}).get("sha256"),
            "counts": meta.get("counts", {}).get("kept_per_split")}  # fmt: skip
