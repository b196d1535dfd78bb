"""One training loop for the neural detectors, readable top to bottom: setup -> fit -> evaluate.

The same functions serve the CLI (``streamguard train gnn|transformer``), a Prefect task and a
container entrypoint. What a run writes (see :class:`RunPaths`)::

    <run_dir>/exp_config.json          the full configuration (reproduces the run)
    <run_dir>/training_metadata.json   per-epoch curves, timings, best epoch, LR and its source
    <run_dir>/training.log             human-readable log
    <run_dir>/checkpoints/latest/      resume point (weights, optimizer, schedule, RNG, position)
    <run_dir>/checkpoints/best/        best weights on the validation selection score (fit)
    <run_dir>/checkpoints/epoch_<k>/   end of every epoch
    <run_dir>/model/                   the final detector (best weights) + model_card.json
    <run_dir>/metrics.json             validation and test metrics of the best model
    <run_dir>/predictions.jsonl        per-function probabilities on test (else valid)
    <run_dir>/collapse_report.json     only when the run collapsed (exit code 3)

With a :class:`~streamguard_core.training.distributed.DistContext` (``setup(..., dist=...)``)
the same loop runs as one rank of a DDP group: each rank trains on its shard of every global
batch, and rank 0 alone evaluates and writes (see that module for what keeps N processes equal
to one).
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from streamguard_core.config import TrainConfig
from streamguard_core.evaluation.metrics import (
    SELECTION_METRIC,
    ThresholdChoice,
    classification_metrics,
    tune_threshold,
)
from streamguard_core.io import atomic_write_json, write_jsonl
from streamguard_core.preprocess.dataset import ProcessedSplit
from streamguard_core.training.checkpoint import (
    is_valid_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from streamguard_core.training.collapse import CollapseDetector, CollapseError
from streamguard_core.training.lr_finder import DEFAULT_LR
from streamguard_core.training.paths import RunPaths

if TYPE_CHECKING:
    from streamguard_core.training.distributed import DistContext


class TrainingInterrupted(RuntimeError):
    """``should_stop`` asked the loop to stop; the 'latest' checkpoint holds the exact state."""


log = logging.getLogger("streamguard.train")


def batches_per_epoch(n: int, cfg: TrainConfig) -> int:
    """Batches one epoch runs (``max_steps_per_epoch`` counts optimizer steps)."""
    batches = math.ceil(n / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        batches = min(batches, cfg.max_steps_per_epoch * cfg.accumulation_steps)
    return batches


# --------------------------------------------------------------------------- data


class Batches:
    """Index-driven batching of a processed split for one model kind (its adapter collates).

    ``subset`` (split indices, repeats allowed) makes this a view of those examples only,
    position ``i`` of the view being example ``subset[i]`` of the split, and an epoch visits
    them in that order (the caller shuffles). None: the whole split, shuffled every epoch.
    """

    def __init__(
        self,
        split: ProcessedSplit,
        kind: str,
        pad_id: int = 1,
        subset: np.ndarray | None = None,
        shuffle_subset: bool = False,
    ) -> None:
        from streamguard_core.models.adapters import adapter_for

        self.split, self.kind, self.pad_id = split, kind, pad_id
        self.adapter = adapter_for(kind)
        self.subset = None if subset is None else np.asarray(subset, dtype=np.int64)
        self.shuffle_subset = shuffle_subset
        rows = slice(None) if self.subset is None else self.subset
        self.labels = split.labels[rows]
        self.weights = np.asarray([float(r.get("weight", 1.0)) for r in split.records])[rows]
        self._cache: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """Positions in the order one epoch visits them (see :func:`epoch_order`)."""
        if self.subset is None or self.shuffle_subset:
            return epoch_order(len(self), seed, epoch)
        return np.arange(len(self))

    def make(self, indices: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Tensors for the examples at ``indices`` (in that order), on ``device``."""
        rows = indices if self.subset is None else self.subset[indices]
        out: dict[str, torch.Tensor] = {
            "labels": torch.as_tensor(self.labels[indices], dtype=torch.long),
            "weights": torch.as_tensor(self.weights[indices], dtype=torch.float32),
            **self.adapter.collate(self.split, rows, self.pad_id, self._cache),
        }
        return {k: v.to(device) for k, v in out.items()}


def forward_logits(
    kind: str, model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Logits [batch, 2] of any neural kind (through its adapter)."""
    from streamguard_core.models.adapters import adapter_for

    return adapter_for(kind).forward(model, batch)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The data order of one epoch: a function of (seed, epoch) only, so resume replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def class_weights(labels: np.ndarray, multiplier: float) -> torch.Tensor:
    """[1, multiplier * n_safe / n_vulnerable]: the rarer vulnerable class counts more."""
    n_pos = max(int(labels.sum()), 1)
    n_neg = max(len(labels) - n_pos, 1)
    return torch.tensor([1.0, multiplier * n_neg / n_pos], dtype=torch.float32)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def predict(
    kind: str, model: torch.nn.Module, data: Batches, device: torch.device, batch_size: int
) -> np.ndarray:
    """Probability of the vulnerable class for every example, in order, shape [n]."""
    was_training = model.training
    model.eval()
    probs = []
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        logits = forward_logits(kind, model, data.make(idx, device))
        probs.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())
    model.train(was_training)
    return np.concatenate(probs) if probs else np.zeros(0)


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainState:
    """Everything ``fit`` needs and mutates; all of it goes into the 'latest' checkpoint."""

    kind: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    device: torch.device
    cfg: TrainConfig
    train: Batches
    valid: Batches
    paths: RunPaths
    loss_weights: torch.Tensor
    lr: float
    lr_source: str
    epoch: int = 0
    next_batch: int = 0
    global_step: int = 0
    best_f1: float = -1.0  # valid F1 of the best epoch, at its tuned threshold
    best_epoch: int = -1
    best_threshold: float = 0.5
    best_score: float = -math.inf  # what selects the best epoch (ThresholdChoice.score)
    best_tuning: dict[str, Any] = field(default_factory=dict)  # its ThresholdChoice, as values
    epochs_without_gain: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0
    epoch_losses: list[float] = field(default_factory=list)  # this epoch's batches so far
    notes: dict[str, Any] = field(default_factory=dict)  # LR finder / batch sizing reports
    collapse: CollapseDetector = field(default_factory=CollapseDetector)
    # hooks (not checkpointed): called with each epoch's history row; polled after every step,
    # a True answer saves 'latest' and raises TrainingInterrupted (SIGTERM on a spot instance)
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    should_stop: Callable[[], bool] | None = None
    # data-parallel runs: this rank's group, and the model inside DDP (what fit trains through;
    # ``model`` stays the bare module, so checkpoints and evaluation never see the wrapper)
    dist: DistContext | None = None
    ddp_model: DistributedDataParallel | None = None

    @property
    def is_main(self) -> bool:
        """True in a one-process run and on rank 0 of a DDP group (the rank that writes)."""
        return self.dist is None or self.dist.is_main


def amp_settings(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, GradScaler enabled) for a mixed-precision mode and device."""
    if device.type != "cuda" or mode == "off":
        return None, False
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False  # bf16 has fp32's range: no loss scaling needed
    return torch.float16, True


def setup(
    kind: str,
    model: torch.nn.Module,
    data_dir: str | Path,
    run_dir: str | Path,
    cfg: TrainConfig,
    device: str | torch.device | None = None,
    pad_id: int = 1,
    lr: float | None = None,
    lr_source: str = "config",
    train_subset: np.ndarray | None = None,
    shuffle_subset: bool = False,
    dist: DistContext | None = None,
) -> TrainState:
    """Model on its device, optimizer, warmup+linear-decay schedule, AMP scaler, data.

    ``train_subset`` (train-split indices, repeats allowed) trains on those examples only, in
    that order every epoch: preflight's smoke test passes over 32 examples again and again
    (``shuffle_subset``: shuffled every epoch instead, as a fold job trains on its K-1 folds).
    None: the whole split, shuffled every epoch.

    ``dist``: this process is one rank of a DDP group; the model is wrapped (on
    ``dist.device``, whatever ``device`` says) and ranks above 0 reseed torch for their own
    dropout stream.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    from streamguard_core.models.adapters import resolve_device

    dev = dist.device if dist is not None else resolve_device(device)
    paths = RunPaths(Path(run_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    train = Batches(ProcessedSplit(data_dir, "train"), kind, pad_id, subset=train_subset,
                    shuffle_subset=shuffle_subset)  # fmt: skip
    valid = Batches(ProcessedSplit(data_dir, "valid"), kind, pad_id)
    if len(train) == 0 or len(valid) == 0:
        raise ValueError(
            f"{data_dir}: train ({len(train)}) and valid ({len(valid)}) must be non-empty"
        )
    model.to(dev)
    lr = lr or cfg.lr or DEFAULT_LR[kind]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and p.requires_grad]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    per_epoch = batches_per_epoch(len(train), cfg)
    total_steps = max(1, cfg.epochs * math.ceil(per_epoch / cfg.accumulation_steps))
    warmup = int(cfg.warmup_ratio * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    amp_dtype, use_scaler = amp_settings(cfg.mixed_precision, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=use_scaler)
    ddp_model = None
    if dist is not None:
        from streamguard_core.training.distributed import rank_seed

        ddp_model = dist.wrap(model)
        if dist.rank > 0:
            torch.manual_seed(rank_seed(cfg.seed, dist.rank))
    return TrainState(
        kind=kind, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        amp_dtype=amp_dtype, device=dev, cfg=cfg, train=train, valid=valid, paths=paths,
        loss_weights=class_weights(train.labels, cfg.class_weight_multiplier).to(dev),
        lr=lr, lr_source=lr_source, dist=dist, ddp_model=ddp_model,
    )  # fmt: skip


def _checkpoint_state(s: TrainState, rng_ranks: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "scaler": s.scaler.state_dict(),
        "rng": rng_state(),
        "rng_ranks": rng_ranks,  # DDP: every rank's RNG (its dropout stream), in rank order
        "position": {"epoch": s.epoch, "next_batch": s.next_batch, "global_step": s.global_step},
        "best": {"f1": s.best_f1, "epoch": s.best_epoch, "threshold": s.best_threshold,
                 "epochs_without_gain": s.epochs_without_gain, "score": s.best_score,
                 "tuning": s.best_tuning},
        "history": s.history,
        "skipped_steps": s.skipped_steps,
        "epoch_losses": s.epoch_losses,
        "collapse": s.collapse.state_dict(),
    }  # fmt: skip


def save_latest(s: TrainState, directory: Path | None = None) -> None:
    """Write the resume point (atomically).

    DDP: every rank calls it (their RNG states are gathered), rank 0 writes, and no rank
    returns before the checkpoint is complete.
    """
    rng_ranks = s.dist.gather(rng_state()) if s.dist is not None else None
    if s.is_main:
        save_checkpoint(
            directory or s.paths.latest,
            _checkpoint_state(s, rng_ranks),
            {
                "epoch": s.epoch,
                "next_batch": s.next_batch,
                "global_step": s.global_step,
                "kind": s.kind,
                "world_size": s.dist.world_size if s.dist is not None else 1,
            },
        )
    if s.dist is not None:
        s.dist.barrier()


def resume(s: TrainState) -> bool:
    """Load the 'latest' checkpoint if there is a complete one; True when resumed."""
    if not is_valid_checkpoint(s.paths.latest):
        return False
    ck = load_checkpoint(s.paths.latest, map_location=s.device)
    s.model.load_state_dict(ck["model"])
    s.optimizer.load_state_dict(ck["optimizer"])
    s.scheduler.load_state_dict(ck["scheduler"])
    s.scaler.load_state_dict(ck["scaler"])
    _restore_rng(s, ck)
    pos, best = ck["position"], ck["best"]
    s.epoch, s.next_batch, s.global_step = pos["epoch"], pos["next_batch"], pos["global_step"]
    s.best_f1, s.best_epoch, s.best_threshold = best["f1"], best["epoch"], best["threshold"]
    s.epochs_without_gain = best["epochs_without_gain"]
    # checkpoints from before thresholds per objective selected on F1 and kept no tuning
    s.best_score, s.best_tuning = best.get("score", best["f1"]), dict(best.get("tuning") or {})
    s.history, s.skipped_steps = list(ck["history"]), ck["skipped_steps"]
    s.collapse.load_state_dict(ck["collapse"])
    s.epoch_losses = list(ck["epoch_losses"])
    log.info("resumed from %s at epoch %d batch %d", s.paths.latest, s.epoch, s.next_batch)
    return True


def _restore_rng(s: TrainState, ck: dict[str, Any]) -> None:
    """This rank's saved RNG state; when the number of processes changed since the checkpoint,
    rank 0 takes the saved main state and the others a fresh stream of their own (only dropout
    draws from it, so the run goes on correctly, not bit for bit)."""
    ranks = ck.get("rng_ranks")
    world, rank = (s.dist.world_size, s.dist.rank) if s.dist is not None else (1, 0)
    if ranks is not None and len(ranks) == world:
        set_rng_state(ranks[rank])
        return
    set_rng_state(ck["rng"] if ranks is None else ranks[0])
    if rank > 0:
        from streamguard_core.training.distributed import rank_seed

        torch.manual_seed(rank_seed(s.cfg.seed, rank) + s.global_step)


def _shard(s: TrainState, idx: np.ndarray) -> tuple[np.ndarray, float]:
    """(this rank's examples of the global batch ``idx``, what its loss sum is multiplied by).

    One process: the batch and 1/len (the mean). DDP: the rank's shard and world/len, so that
    DDP's average over the ranks is the mean over the whole global batch; a rank with no
    example of its own runs a stand-in weighted 0.
    """
    if s.dist is None:
        return idx, 1.0 / len(idx)
    from streamguard_core.training.distributed import shard_batch

    local, stand_in = shard_batch(idx, s.dist.rank, s.dist.world_size)
    return local, 0.0 if stand_in else s.dist.world_size / len(idx)


def fit(s: TrainState) -> dict[str, Any]:
    """Train until the epochs run out or the validation selection score stops improving.

    After every epoch the decision threshold is tuned on valid for
    ``cfg.threshold_objective`` (:func:`tune_threshold`), and the epoch is kept as the best
    when its :attr:`ThresholdChoice.score` beats the best so far: the objective's own metric
    at its own threshold, so the checkpoint and the threshold serve the same goal. That is
    valid F1 for "f1" (the default, as before), valid accuracy for "accuracy", and valid
    recall at the target precision for "precision" (an epoch reaching the target always ranks
    above one that does not). Collapse is judged at the F1-tuned threshold whatever the
    objective: accuracy's best cut for a weak but ranking model can be "always safe".

    DDP (``s.dist``): the ranks train their shards of each global batch through ``s.ddp_model``;
    each step's loss and stop request are all-reduced, rank 0 scores valid and broadcasts the
    probabilities, so every rank makes the same decisions; only rank 0 writes.

    Returns:
        ``{"best_f1", "best_epoch", "epochs_run", "best_score", "selection_metric"}``.
    """
    cfg, model, dist = s.cfg, s.model, s.dist
    net = s.ddp_model if s.ddp_model is not None else model  # what the training steps run
    model.train()
    n = len(s.train)
    n_batches = batches_per_epoch(n, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    while s.epoch < cfg.epochs and s.epochs_without_gain < cfg.early_stopping_patience:
        t_epoch = time.perf_counter()
        order = s.train.epoch_order(cfg.seed, s.epoch)
        losses = s.epoch_losses  # kept in checkpoints, so a resumed epoch reports all batches
        s.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(
            range(s.next_batch, n_batches),
            desc=f"{s.kind} epoch {s.epoch}",
            unit="batch",
            disable=None if s.is_main else True,  # on a terminal only, rank 0 only
            file=sys.stderr,
        )
        for b in bar:
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            ends_step = not ((b + 1) % cfg.accumulation_steps and b + 1 < n_batches)
            local, scale = _shard(s, idx)
            batch = s.train.make(local, s.device)
            # DDP all-reduces gradients on the backward of a step's last batch only
            ddp = s.ddp_model
            sync = ddp.no_sync() if ddp is not None and not ends_step else nullcontext()
            with sync:
                with torch.autocast(s.device.type, dtype=s.amp_dtype,
                                    enabled=s.amp_dtype is not None):  # fmt: skip
                    logits = forward_logits(s.kind, net, batch)
                per_example = torch.nn.functional.cross_entropy(
                    logits.float(), batch["labels"], weight=s.loss_weights, reduction="none"
                )
                if cfg.use_weights:
                    per_example = per_example * batch["weights"]
                if dist is None:  # the mean, as always (bit for bit as before)
                    loss = per_example.mean() / cfg.accumulation_steps
                else:
                    loss = per_example.sum() * scale / cfg.accumulation_steps
                s.scaler.scale(loss).backward()
            batch_loss = float(loss.detach()) * cfg.accumulation_steps
            if dist is not None and not ends_step:  # every rank logs the global batch's loss
                batch_loss = dist.all_reduce_sum([batch_loss / dist.world_size])[0]
            if not ends_step:
                losses.append(batch_loss)
                continue
            # AMP-safe clipping: unscale first, so the norm is of the true gradients
            s.scaler.unscale_(s.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            if math.isfinite(grad_norm):
                s.scaler.step(s.optimizer)  # with a scaler this also skips inf/nan steps
            else:
                s.skipped_steps += 1  # never step on non-finite gradients
            s.scaler.update()
            s.scheduler.step()
            s.optimizer.zero_grad(set_to_none=True)
            s.global_step += 1
            s.next_batch = b + 1
            stop = s.should_stop is not None and s.should_stop()
            if dist is not None:  # one collective: the global loss, and any rank's stop request
                total, stops = dist.all_reduce_sum([batch_loss / dist.world_size, float(stop)])
                batch_loss, stop = total, stops > 0
            losses.append(batch_loss)
            # the same on every rank: the loss is all-reduced, the gradients too (so the norm)
            event = s.collapse.on_step(losses[-1], grad_norm, s.epoch, s.global_step)
            if event is not None:
                raise CollapseError(event)
            if stop:
                write_metadata(s)
                save_latest(s)  # DDP: a barrier; no rank leaves before rank 0 has written
                raise TrainingInterrupted(f"stop requested at step {s.global_step}; 'latest' saved")
            if s.global_step % cfg.checkpoint_every_steps == 0:
                save_latest(s)
                log.info(
                    "step %d loss %.4f grad_norm %.3f lr %.3g",
                    s.global_step, losses[-1], grad_norm, s.scheduler.get_last_lr()[0],
                )  # fmt: skip
        # ---- end of epoch: validate, keep the best, decide whether to go on
        probs = predict(s.kind, model, s.valid, s.device, cfg.batch_size) if s.is_main else None
        if dist is not None:  # the same numbers on every rank: the same decisions
            probs = dist.broadcast(probs)
        assert probs is not None
        choice = tune_threshold(
            s.valid.labels, probs, cfg.threshold_objective, cfg.target_precision
        )
        threshold = choice.threshold
        metrics = classification_metrics(s.valid.labels, probs, choice)
        row = {
            "epoch": s.epoch,
            "train_loss": float(np.mean(losses)) if losses else None,
            "valid_f1": metrics["f1"],
            "valid_roc_auc": metrics["roc_auc"],
            "valid_accuracy": metrics["accuracy"],
            "valid_accuracy_at_half": metrics["accuracy_at_half"],
            "threshold": threshold,
            "selection_score": choice.score,
            "lr": s.scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - t_epoch, 2),
            "global_step": s.global_step,
        }
        s.history.append(row)
        if s.is_main:
            log.info("epoch %d %s", s.epoch, row)
        if choice.note and s.is_main:
            log.warning("epoch %d threshold (%s): %s", s.epoch, choice.objective, choice.note)
        # judged at the F1-tuned threshold: a model whose scores are all alike predicts one
        # class at any cut, while an early, class-weighted model that already ranks well can sit
        # entirely above 0.5 (tiny transformer on the demo data: ROC-AUC 0.68, all "1" at 0.5);
        # the accuracy-tuned cut of such a model can be "always safe", so it is not used here
        f1_cut = choice
        if choice.objective != "f1":
            f1_cut = tune_threshold(s.valid.labels, probs, "f1")
        event = s.collapse.on_eval((probs >= f1_cut.threshold).astype(int), f1_cut.score, s.epoch)
        if event is not None:
            write_metadata(s)
            raise CollapseError(event)
        if choice.score > s.best_score:
            s.best_f1, s.best_epoch, s.best_threshold = metrics["f1"], s.epoch, threshold
            s.best_score, s.best_tuning = choice.score, asdict(choice)
            s.epochs_without_gain = 0
            if s.is_main:
                save_checkpoint(
                    s.paths.best,
                    {"model": model.state_dict()},
                    {"epoch": s.epoch, "valid_f1": metrics["f1"], "threshold": threshold,
                     "threshold_objective": choice.objective, "selection_score": choice.score},
                )  # fmt: skip
        else:
            s.epochs_without_gain += 1
        s.epoch += 1
        s.next_batch = 0
        s.epoch_losses = []
        save_latest(s, s.paths.epoch(s.epoch - 1))
        save_latest(s)
        write_metadata(s)
        if s.on_epoch_end is not None and s.is_main:
            s.on_epoch_end(dict(row, epochs=cfg.epochs))
    return {
        "best_f1": s.best_f1,
        "best_epoch": s.best_epoch,
        "epochs_run": s.epoch,
        "best_score": s.best_score,
        "selection_metric": SELECTION_METRIC[cfg.threshold_objective],
    }


def write_metadata(s: TrainState) -> None:
    """training_metadata.json: curves, best epoch, LR and where it came from (rank 0 only)."""
    if not s.is_main:
        return
    atomic_write_json(
        s.paths.metadata,
        {
            "kind": s.kind,
            "history": s.history,
            "best_epoch": s.best_epoch,
            "best_valid_f1": s.best_f1,
            "threshold": s.best_threshold,
            "threshold_objective": s.cfg.threshold_objective,
            "selection_metric": SELECTION_METRIC[s.cfg.threshold_objective],
            "best_valid_score": s.best_score if math.isfinite(s.best_score) else None,
            "threshold_tuning": s.best_tuning or None,
            "lr": s.lr,
            "lr_source": s.lr_source,
            "global_step": s.global_step,
            "skipped_non_finite_steps": s.skipped_steps,
            "device": str(s.device),
            "amp_dtype": str(s.amp_dtype) if s.amp_dtype else None,
            "parameters": sum(p.numel() for p in s.model.parameters()),
            "batch_size": s.cfg.batch_size,
            "world_size": s.dist.world_size if s.dist is not None else 1,
            **s.notes,
        },
    )


def write_predictions(
    path: Path, records: list[dict[str, Any]], probs: np.ndarray, threshold: float
) -> Path:
    """``{"id", "label", "probability", "prediction"}`` per function, in order (JSON Lines)."""
    write_jsonl(
        path,
        (
            {"id": r["id"], "label": int(r["label"]), "probability": float(p),
             "prediction": int(p >= threshold)}
            for r, p in zip(records, probs, strict=True)
        ),
    )  # fmt: skip
    return path


def best_cut(s: TrainState) -> ThresholdChoice | float:
    """The best epoch's threshold with how it was tuned (a bare float from an older checkpoint)."""
    return ThresholdChoice(**s.best_tuning) if s.best_tuning else s.best_threshold


def evaluate_best(s: TrainState, test_dir: str | Path | None = None) -> dict[str, Any]:
    """Load the best weights; metrics on valid (and test) at the tuned threshold; predictions."""
    ck = load_checkpoint(s.paths.best, map_location=s.device)
    s.model.load_state_dict(ck["model"])
    results: dict[str, Any] = {}
    scored = {"valid": s.valid}
    if test_dir is not None and len(ProcessedSplit(test_dir, "test").records):
        scored["test"] = Batches(ProcessedSplit(test_dir, "test"), s.kind, s.train.pad_id)
    last_probs: tuple[Batches, np.ndarray] | None = None
    for name, data in scored.items():
        probs = predict(s.kind, s.model, data, s.device, s.cfg.batch_size)
        if name == "valid":  # the fusion detector's validation inputs
            write_predictions(s.paths.valid_predictions, data.split.records, probs,
                              s.best_threshold)  # fmt: skip
        results[name] = classification_metrics(data.labels, probs, best_cut(s))
        last_probs = (data, probs)
    atomic_write_json(s.paths.metrics, results)
    if last_probs is not None:
        data, probs = last_probs
        write_predictions(s.paths.predictions, data.split.records, probs, s.best_threshold)
    return results
