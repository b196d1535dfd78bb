"""Batch-size estimation, in one place: what preprocessing, ``train.auto_batch_size`` and
preflight recommend.

* :func:`recommend_batch_size`: a GNN batch size from the data set's graph statistics (p95
  graph) and a memory budget; written into ``preprocessing_metadata.json`` and used by
  ``auto_batch_size`` for GNNs.
* :func:`suggest_batch_size`: from a measured memory need at one batch size (preflight's memory
  test), the largest power of two that fits a capacity.
* :func:`probe_batch_size`: on CUDA, one forward + backward on the longest examples, halving the
  batch on out-of-memory (``auto_batch_size`` for transformers).
* :func:`auto_batch_size`: the ``train.auto_batch_size`` decision for one run.

Only numpy and the config are imported at module level: preprocessing imports this module
without paying for torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamguard_core.config import GNNConfig, PreprocessConfig, TrainConfig

if TYPE_CHECKING:
    import torch

MB = 1024 * 1024
TARGET_FRACTION = 0.9
"""A suggested batch keeps the estimated need under this share of the capacity."""
GPU_BUDGET_FRACTION = 0.8
"""``auto_batch_size`` without ``memory_budget_mb`` on CUDA: this share of the GPU's memory."""
CPU_BUDGET_MB: float = PreprocessConfig.model_fields["gnn_memory_budget_mb"].default
"""``auto_batch_size`` without ``memory_budget_mb`` off CUDA: the budget preprocessing sizes for."""


def pow2_floor(n: float) -> int:
    """The largest power of two <= ``n`` (1 for ``n`` < 2)."""
    b = 1
    while b * 2 <= n:
        b *= 2
    return b


def recommend_batch_size(
    nodes_p95: float,
    edges_p95: float,
    memory_budget_mb: float,
    hidden_dim: int = GNNConfig.model_fields["hidden_dim"].default,
    num_layers: int = GNNConfig.model_fields["num_layers"].default,
    max_batch: int = 512,
) -> dict[str, Any]:
    """GNN batch size (power of two) whose p95-sized batch fits a memory budget.

    Estimate per graph, in bytes, for training (forward + backward, fp32):
    ``nodes * hidden * 4 * layers * 4`` (layer outputs, their gradients, dropout masks and
    normalisation buffers) plus ``edges * (16 + hidden * 4 * layers * 2)`` (int64 edge index,
    and the per-edge messages of message passing with their gradients), times 1.5 for
    allocator slack. Sized on the p95 graph so that most batches stay well under the budget.
    """
    per_graph = 1.5 * (
        nodes_p95 * hidden_dim * 4 * num_layers * 4
        + edges_p95 * (16 + hidden_dim * 4 * num_layers * 2)
    )
    budget = memory_budget_mb * MB
    raw = int(budget // max(per_graph, 1.0))
    return {
        "recommended_batch_size": pow2_floor(min(raw, max_batch)),
        "estimated_bytes_per_graph_p95": int(per_graph),
        "memory_budget_mb": memory_budget_mb,
        "hidden_dim": hidden_dim,
        "num_layers": num_layers,
        "fits_one_graph": raw >= 1,
        "formula": "1.5*(nodes_p95*hidden*4*layers*4 + edges_p95*(16+hidden*4*layers*2))",
    }


def suggest_batch_size(
    batch_size: int, required: float, fixed: float, capacity: float
) -> tuple[int, str]:
    """Largest power-of-two batch whose estimate stays under 90% of ``capacity`` (bytes).

    ``fixed`` (weights, gradients, optimizer state) does not shrink with the batch; the rest of
    ``required`` (activations, measured at ``batch_size``) is scaled in proportion to the batch.

    Returns:
        (batch size, the basis of the suggestion in words).
    """
    target = TARGET_FRACTION * capacity
    per_example = max(required - fixed, 0.0) / batch_size
    if fixed >= target:
        return 1, (
            f"the model state alone ({fixed / MB:.1f} MB) exceeds {TARGET_FRACTION:.0%} of "
            "capacity; even batch size 1 may not fit (use a smaller model or more memory)"
        )
    if per_example <= 0:
        return pow2_floor(batch_size), "activations too small to measure"
    fits = (target - fixed) / per_example
    return pow2_floor(min(max(fits, 1.0), batch_size)), (
        f"{per_example / MB:.2f} MB of activations per example"
    )


def largest_examples(sizes: np.ndarray, batch_size: int) -> np.ndarray:
    """Indices of the ``batch_size`` largest examples (cycled when the split is smaller)."""
    order = np.argsort(-np.asarray(sizes), kind="stable")
    return np.resize(order, batch_size)


def probe_batch_size(
    kind: str,
    model: torch.nn.Module,
    data_dir: str | Path,
    pad_id: int,
    batch_size: int,
    device: str | torch.device,
    amp_dtype: torch.dtype | None = None,
) -> int:
    """Largest of ``batch_size``, ``batch_size // 2``, ... for which one forward + backward on
    the train split's largest examples runs without a CUDA out-of-memory error.

    Raises:
        RuntimeError: not even one example fits.
    """
    import torch

    from streamguard_core.models.adapters import adapter_for
    from streamguard_core.preprocess.dataset import ProcessedSplit
    from streamguard_core.training.loop import Batches

    dev = torch.device(device)
    adapter = adapter_for(kind)
    data = Batches(ProcessedSplit(data_dir, "train"), kind, pad_id)
    sizes = adapter.sizes(data.split)
    model.to(dev).train()
    batch = batch_size
    while batch >= 1:
        try:
            b = data.make(largest_examples(sizes, batch), dev)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = adapter.forward(model, b)
            logits.float().sum().backward()
            model.zero_grad(set_to_none=True)
            return batch
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            batch //= 2
    raise RuntimeError("not even one example fits in GPU memory")


def memory_budget_mb(cfg: TrainConfig, device: torch.device) -> float:
    """``cfg.memory_budget_mb``, else 80% of the GPU's memory on CUDA, else 2048 MB."""
    import torch

    if cfg.memory_budget_mb:
        return cfg.memory_budget_mb
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return GPU_BUDGET_FRACTION * torch.cuda.get_device_properties(index).total_memory / MB
    return CPU_BUDGET_MB


def auto_batch_size(
    kind: str, model: torch.nn.Module, model_cfg: Any, cfg: TrainConfig, data_dir: Path,
    pad_id: int, device: str | None,
) -> tuple[TrainConfig, dict[str, Any]]:  # fmt: skip
    """``train.auto_batch_size``: the batch size for the memory budget, from graph statistics
    (GNN) or a CUDA probe (transformer); returns the updated config and a note for the run's
    metadata."""
    from streamguard_core.models.adapters import resolve_device
    from streamguard_core.preprocess.dataset import ProcessedDataset
    from streamguard_core.training.loop import amp_settings

    dev = resolve_device(device)
    budget = memory_budget_mb(cfg, dev)
    note: dict[str, Any] = {"memory_budget_mb": round(budget, 1), "requested": cfg.batch_size}
    if kind == "gnn":
        stats = ProcessedDataset(data_dir).metadata.graph_stats.get("train", {})
        sizing = recommend_batch_size(
            stats.get("nodes_p95", 0.0), stats.get("edges_p95", 0.0), budget,
            model_cfg.hidden_dim, model_cfg.num_layers,
        )  # fmt: skip
        note.update(sizing)
        batch = int(sizing["recommended_batch_size"])
    elif dev.type == "cuda":
        amp_dtype, _ = amp_settings(cfg.mixed_precision, dev)
        batch = probe_batch_size(kind, model, data_dir, pad_id, cfg.batch_size, dev, amp_dtype)
        note["method"] = (
            "CUDA probe: one forward+backward on the longest sequences (the run's autocast "
            "dtype), halving on OOM"
        )
    else:
        batch = cfg.batch_size
        note["method"] = "no probe on CPU: the configured batch size is kept"
    note["chosen"] = batch
    return cfg.model_copy(update={"batch_size": batch}), note
