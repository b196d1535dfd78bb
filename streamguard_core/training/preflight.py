"""Go/no-go checks before a long training run (``streamguard preflight``).

Each check returns ``{"name", "status": "pass"|"warn"|"fail", "detail", ...figures}``; any
``fail`` makes the run a no-go, warnings do not block. The checks:

``device``
    the requested device exists (the full device report is the report's ``device`` key).
``data``
    the directory is a processed data set: ``preprocessing_metadata.json``, non-empty train and
    valid splits, both labels in train.
``overfit:<kind>``
    a smoke test: the model must fit 32 training examples (both classes) to >= 95% train accuracy.
    Neural kinds train full-batch with AdamW and no dropout for up to ``overfit_steps`` steps;
    examples identical (as the model sees them) to one of the other label are left out;
    the baseline fits TF-IDF + logistic regression with ``min_df=1, C=100``. A model that cannot
    memorise 32 examples has a bug (or the data's labels do not follow its inputs).
``memory:<kind>``
    one forward + backward at the configured batch size on the train split's largest examples
    (most graph nodes / longest token sequences), plus the AdamW state a real step allocates,
    compared with the memory capacity: warn above 90%, fail above 100% with a batch size that
    fits.
``lr_cache``
    the learning-rate finder's cache directory can be created and written.
``disk``
    free space where the report (and so the run) goes: warn under 5 GB, fail under 1 GB.

:func:`run_preflight` writes ``preflight_report.json`` atomically and returns it.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import hashlib
import importlib
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from streamguard_core.io import atomic_write_json
from streamguard_core.preprocess.dataset import METADATA_FILE, ProcessedSplit, load_metadata

Status = Literal["pass", "warn", "fail"]
NEURAL_KINDS = ("gnn", "transformer")
KINDS = (*NEURAL_KINDS, "baseline")
DEFAULT_LR_CACHE_DIR = Path("~/.cache/streamguard/lr")
DEFAULT_HIDDEN_DIM = {"gnn": 256, "transformer": 128}
OVERFIT_LR = {"gnn": 2e-3, "transformer": 1e-3}
"""Smoke-test learning rates. (The GCN at 3e-3 oscillated and needed up to ~70 steps on the
synthetic set; 2e-3 reached 95% in 33-49 steps for hidden 64 and 256 over three seeds.)"""
BASELINE_OVERFIT_C = 100.0
"""Weak regularisation for the baseline smoke test: at the default C=1 logistic regression does
not fit 32 near-identical vulnerable/fixed pairs (84-88% train accuracy); C=100 fits them."""
OVERFIT_SAMPLES = 32
OVERFIT_ACCURACY = 0.95
MEMORY_WARN_FRACTION = 0.9
MEMORY_FAIL_FRACTION = 1.0
DISK_WARN_GB = 5.0
DISK_FAIL_GB = 1.0
MB = 1024 * 1024


def _check(name: str, status: Status, detail: str, **figures: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, **figures}


# --------------------------------------------------------------------------- device


def resolve_device(device: str | None) -> torch.device:
    """``cuda``/``cpu``/``cuda:1`` as given; None: CUDA when available, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def device_report(device: torch.device) -> dict[str, Any]:
    """Torch version, CUDA devices, MPS, CPU count and the AMP dtype training would use."""
    from streamguard_core.training.loop import amp_settings

    cuda = torch.cuda.is_available()
    devices = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(
                {"index": i, "name": props.name, "total_memory_mb": round(props.total_memory / MB)}
            )
    mps = getattr(torch.backends, "mps", None)
    usable = device.type != "cuda" or cuda
    amp_dtype, scaler = amp_settings("auto", device) if usable else (None, False)
    return {
        "selected": str(device),
        "torch_version": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": devices,
        "mps_available": bool(mps is not None and mps.is_available()),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "amp_dtype": str(amp_dtype) if amp_dtype is not None else None,
        "amp_grad_scaler": scaler,
        "python": sys.version.split()[0],
    }


def memory_capacity(device: torch.device) -> tuple[float | None, str]:
    """(capacity in MB, where it came from): the GPU's total memory, else available RAM."""
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        return total / MB, f"cuda:{index} total memory"
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None, "unknown (os.sysconf SC_AVPHYS_PAGES unsupported)"
    return pages * page_size / MB, "available RAM (os.sysconf SC_AVPHYS_PAGES * SC_PAGE_SIZE)"


def check_device(requested: str | None, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda" and not torch.cuda.is_available():
        return _check("device", "fail", f"device {requested!r} requested but CUDA is unavailable")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        return _check(
            "device", "fail", f"{device} requested; {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        return _check("device", "fail", "device 'mps' requested but MPS is unavailable")
    if device.type == "cpu" and torch.cuda.is_available():
        return _check("device", "warn", "training on CPU although CUDA is available")
    return _check("device", "pass", f"training on {device}")


# --------------------------------------------------------------------------- data


def check_data(data_dir: Path) -> tuple[dict[str, Any], ProcessedSplit | None]:
    """The data set check and, when it passes, the train split."""
    if not data_dir.is_dir():
        return _check("data", "fail", f"{data_dir}: no such directory"), None
    if not (data_dir / METADATA_FILE).exists():
        return _check("data", "fail", f"{data_dir}: no {METADATA_FILE} (not preprocessed)"), None
    load_metadata(data_dir)  # valid JSON
    counts: dict[str, int] = {}
    splits: dict[str, ProcessedSplit] = {}
    for name in ("train", "valid", "test"):
        try:
            splits[name] = ProcessedSplit(data_dir, name)
            counts[name] = len(splits[name])
        except FileNotFoundError:
            counts[name] = 0
    labels: dict[str, int] = {}
    if "train" in splits:
        values, freq = np.unique(splits["train"].labels, return_counts=True)
        labels = {str(int(v)): int(f) for v, f in zip(values, freq, strict=True)}
    problems = [f"{s} split is empty" for s in ("train", "valid") if counts[s] == 0]
    if counts["train"] and set(labels) != {"0", "1"}:
        problems.append(f"train holds label(s) {sorted(labels)} only; both 0 and 1 are needed")
    figures: dict[str, Any] = {"counts": counts, "train_labels": labels}
    if problems:
        return _check("data", "fail", "; ".join(problems), **figures), None
    train = splits["train"]
    conflicts = {view: int(label_conflicts(train, view).sum()) for view in INPUT_VIEW.values()}
    figures["train_label_conflicts"] = conflicts
    detail = (
        f"train {counts['train']} ({labels.get('1', 0)} vulnerable), valid {counts['valid']}, "
        f"test {counts['test']}"
    )
    clashes = [f"{n} by {view}" for view, n in conflicts.items() if n]
    if clashes:
        return _check(
            "data", "warn",
            f"{detail}; train examples identical to one of the other label: "
            f"{', '.join(clashes)} (tokens: trimming to max_seq_len may hide the fix; "
            "excluded from the overfit tests)",
            **figures,
        ), train  # fmt: skip
    return _check("data", "pass", detail, **figures), train


def overfit_indices(
    labels: np.ndarray,
    n: int = OVERFIT_SAMPLES,
    seed: int = 42,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``n`` training indices, as balanced between the classes as the data allows.

    ``exclude`` (a boolean mask) drops examples that cannot be told apart from one of the other
    label (see :func:`label_conflicts`): no model can memorise those.
    """
    rng = np.random.default_rng(seed)
    keep = np.ones(len(labels), dtype=bool) if exclude is None else ~exclude
    pos = rng.permutation(np.flatnonzero((labels == 1) & keep))
    neg = rng.permutation(np.flatnonzero((labels == 0) & keep))
    take_pos = min(len(pos), max(n // 2, n - len(neg)))
    take_neg = min(len(neg), n - take_pos)
    return np.sort(np.concatenate([pos[:take_pos], neg[:take_neg]]))


INPUT_VIEW = {"transformer": "tokens", "gnn": "graph", "baseline": "text"}
"""What each model kind reads of an example."""


def _digest(split: ProcessedSplit, i: int, view: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    if view == "tokens":
        h.update(np.ascontiguousarray(split.input_ids(i)).tobytes())
    elif view == "graph":
        for name, arr in split.graph_arrays(i).items():
            h.update(f"{name}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    else:
        h.update(str(split.records[i]["func"]).encode("utf-8", "surrogatepass"))
    return h.digest()


def label_conflicts(split: ProcessedSplit, view: str) -> np.ndarray:
    """Boolean mask: examples whose input (``tokens``/``graph``/``text``) also occurs with the
    other label. Identical token sequences under opposite labels typically mean trimming to
    ``max_seq_len`` cut away the lines that differ between a vulnerable function and its fix.
    """
    labels = split.labels
    seen: dict[bytes, set[int]] = {}
    keys = [_digest(split, i, view) for i in range(len(split))]
    for key, label in zip(keys, labels, strict=True):
        seen.setdefault(key, set()).add(int(label))
    return np.asarray([len(seen[k]) > 1 for k in keys], dtype=bool)


# --------------------------------------------------------------------------- models


def model_config(kind: str, hidden_dim: int | None, max_seq_len: int, dropout: float | None) -> Any:
    """The kind's default architecture with the given hidden size (dropout None: default)."""
    extra: dict[str, Any] = {} if dropout is None else {"dropout": dropout}
    if kind == "gnn":
        from streamguard_core.models.gnn import GNNConfig

        return GNNConfig(hidden_dim=hidden_dim or DEFAULT_HIDDEN_DIM["gnn"], **extra)
    from streamguard_core.models.transformer import TransformerConfig

    return TransformerConfig(
        hidden_size=hidden_dim or DEFAULT_HIDDEN_DIM["transformer"],
        max_seq_len=max_seq_len,
        **extra,
    )


def _sequence_lengths(split: ProcessedSplit) -> np.ndarray:
    return np.asarray([len(split.input_ids(i)) for i in range(len(split))], dtype=np.int64)


def _graph_sizes(split: ProcessedSplit) -> np.ndarray:
    return np.asarray(
        [len(split.graph_arrays(i)["node_type"]) for i in range(len(split))], dtype=np.int64
    )


def _check_sequence_fit(kind: str, split: ProcessedSplit, max_seq_len: int) -> str | None:
    if kind != "transformer":
        return None
    longest = int(_sequence_lengths(split).max())
    if longest > max_seq_len:
        return (
            f"train sequences reach {longest} tokens, more than max_seq_len {max_seq_len}; "
            "raise --max-seq-len or preprocess with a smaller one"
        )
    return None


def _two_classes(labels: np.ndarray, conflicting: np.ndarray) -> str | None:
    if len(np.unique(labels)) == 2:
        return None
    return (
        f"no training examples of both classes to overfit ({int(conflicting.sum())} excluded as "
        "identical to an example of the other label)"
    )


def check_overfit_neural(
    kind: str,
    data_dir: Path,
    train: ProcessedSplit,
    hidden_dim: int | None,
    max_seq_len: int,
    device: torch.device,
    steps: int,
    seed: int = 42,
) -> dict[str, Any]:
    """Full-batch AdamW on 32 examples, no dropout, until train accuracy >= 0.95."""
    from streamguard_core.training.loop import Batches, forward_logits, seed_everything
    from streamguard_core.training.run import build_model

    name = f"overfit:{kind}"
    if (problem := _check_sequence_fit(kind, train, max_seq_len)) is not None:
        return _check(name, "fail", problem)
    t0 = time.perf_counter()
    seed_everything(seed)
    cfg = model_config(kind, hidden_dim, max_seq_len, dropout=0.0)
    model, pad_id = build_model(kind, cfg, data_dir)
    model.to(device).train()
    conflicting = label_conflicts(train, INPUT_VIEW[kind])
    idx = overfit_indices(train.labels, OVERFIT_SAMPLES, seed, exclude=conflicting)
    if (problem := _two_classes(train.labels[idx], conflicting)) is not None:
        return _check(name, "fail", problem)
    batch = Batches(train, kind, pad_id).make(idx, device)
    labels = batch["labels"]
    lr = OVERFIT_LR[kind]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    accuracy, loss_value, updates = 0.0, float("nan"), 0
    for updates in range(steps + 1):
        logits = forward_logits(kind, model, batch).float()
        loss = torch.nn.functional.cross_entropy(logits, labels)
        accuracy = float((logits.argmax(-1) == labels).float().mean())
        loss_value = float(loss.detach())
        if not np.isfinite(loss_value) or accuracy >= OVERFIT_ACCURACY or updates == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    figures = {
        "accuracy": round(accuracy, 4),
        "steps": updates,
        "max_steps": steps,
        "final_loss": round(loss_value, 6) if np.isfinite(loss_value) else None,
        "samples": len(idx),
        "positives": int(train.labels[idx].sum()),
        "excluded_conflicting": int(conflicting.sum()),
        "lr": lr,
        "hidden_dim": cfg.hidden_dim if kind == "gnn" else cfg.hidden_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if not np.isfinite(loss_value):
        return _check(name, "fail", f"loss became non-finite after {updates} steps", **figures)
    summary = (
        f"train accuracy {accuracy:.3f} on {len(idx)} examples after {updates} steps "
        f"(loss {loss_value:.4f})"
    )
    if accuracy >= OVERFIT_ACCURACY:
        return _check(name, "pass", summary, **figures)
    return _check(
        name,
        "fail",
        f"{summary}; cannot memorise {len(idx)} examples (a model or data bug)",
        **figures,
    )


def check_overfit_baseline(train: ProcessedSplit, seed: int = 42) -> dict[str, Any]:
    """TF-IDF + logistic regression (min_df=1) fitted on the 32 must classify them."""
    from streamguard_core.models.baseline import BaselineConfig, BaselineDetector

    t0 = time.perf_counter()
    conflicting = label_conflicts(train, INPUT_VIEW["baseline"])
    idx = overfit_indices(train.labels, OVERFIT_SAMPLES, seed, exclude=conflicting)
    if (problem := _two_classes(train.labels[idx], conflicting)) is not None:
        return _check("overfit:baseline", "fail", problem)
    funcs = [str(train.records[int(i)]["func"]) for i in idx]
    labels = train.labels[idx]
    det = BaselineDetector(BaselineConfig(min_df=1, C=BASELINE_OVERFIT_C, seed=seed))
    det.fit(funcs, labels)
    accuracy = float(((det.predict_proba(funcs) >= 0.5).astype(int) == labels).mean())
    figures = {
        "accuracy": round(accuracy, 4),
        "samples": len(idx),
        "positives": int(labels.sum()),
        "excluded_conflicting": int(conflicting.sum()),
        "vocabulary_size": len(det.vectorizer.vocabulary_),
        "C": BASELINE_OVERFIT_C,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    summary = f"train accuracy {accuracy:.3f} on {len(idx)} examples"
    if accuracy >= OVERFIT_ACCURACY:
        return _check("overfit:baseline", "pass", summary, **figures)
    return _check("overfit:baseline", "fail", f"{summary}; cannot memorise them", **figures)


# --------------------------------------------------------------------------- memory


def _current_rss_reader() -> tuple[Callable[[], int] | None, str]:
    """A reader of this process's resident set size in bytes, and its name."""
    try:
        psutil = importlib.import_module("psutil")
        proc = psutil.Process()
        return (lambda: int(proc.memory_info().rss)), "psutil RSS sampling"
    except ImportError:
        pass
    statm = Path("/proc/self/statm")
    if statm.exists():
        page = os.sysconf("SC_PAGE_SIZE")
        return (lambda: int(statm.read_text().split()[1]) * page), "/proc/self/statm RSS sampling"
    return None, "ru_maxrss"


def _maxrss_bytes() -> int:
    # ru_maxrss is KiB on Linux and BSD, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that RSS growth measures
    new allocations instead of reuse of memory earlier checks freed. Best effort."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class _PeakRSS:
    """Peak RSS growth of this process while the ``with`` block runs (CPU memory test).

    Frees what it can first (:func:`_release_freed_memory`), then polls the current RSS (psutil,
    else ``/proc/self/statm``) every millisecond from a thread, and also takes the growth of
    ``ru_maxrss``, the process's all-time peak; the larger wins. Without a current-RSS reader
    only ``ru_maxrss`` is left, which reads 0 when the process had peaked higher before (then the
    weights + gradients floor in :func:`check_memory` applies). RSS growth can still undercount
    when the allocator reuses memory it kept, so treat the CPU figure as an estimate.
    """

    def __init__(self) -> None:
        self.read, self.method = _current_rss_reader()
        self.peak_delta = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = self._peak = self._maxrss0 = 0

    def sample(self) -> None:
        if self.read is not None:
            self._peak = max(self._peak, self.read())

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.001)

    def __enter__(self) -> _PeakRSS:
        _release_freed_memory()
        self._maxrss0 = _maxrss_bytes()
        self._base = self.read() if self.read is not None else 0
        self._peak = self._base
        if self.read is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        maxrss_delta = _maxrss_bytes() - self._maxrss0
        self.peak_delta = max(self._peak - self._base, maxrss_delta, 0)


def _largest(sizes: np.ndarray, batch_size: int) -> np.ndarray:
    """The ``batch_size`` largest examples (cycled when the split is smaller)."""
    order = np.argsort(-sizes, kind="stable")
    return np.resize(order, batch_size)


def _pow2_floor(n: float) -> int:
    b = 1
    while b * 2 <= n:
        b *= 2
    return b


def suggest_batch_size(
    batch_size: int, required: float, fixed: float, capacity: float
) -> tuple[int, str]:
    """Largest power-of-two batch whose estimate stays under 90% of ``capacity``.

    ``fixed`` (weights, gradients, optimizer state) does not shrink with the batch; the rest
    (activations) is scaled down in proportion to the batch size.
    """
    target = MEMORY_WARN_FRACTION * capacity
    per_example = max(required - fixed, 0.0) / batch_size
    if fixed >= target:
        return 1, (
            f"the model state alone ({fixed / MB:.1f} MB) exceeds {MEMORY_WARN_FRACTION:.0%} of "
            "capacity; even batch size 1 may not fit (use a smaller model or more memory)"
        )
    if per_example <= 0:
        return _pow2_floor(batch_size), "activations too small to measure"
    fits = (target - fixed) / per_example
    return _pow2_floor(min(max(fits, 1.0), batch_size)), (
        f"{per_example / MB:.2f} MB of activations per example"
    )


def check_memory(
    kind: str,
    data_dir: Path,
    train: ProcessedSplit,
    hidden_dim: int | None,
    max_seq_len: int,
    device: torch.device,
    batch_size: int,
    capacity_mb: float | None,
    capacity_source: str,
    seed: int = 42,
) -> dict[str, Any]:
    """One forward + backward at ``batch_size`` on the largest training examples."""
    from streamguard_core.training.loop import (
        Batches,
        amp_settings,
        forward_logits,
        seed_everything,
    )
    from streamguard_core.training.run import build_model

    name = f"memory:{kind}"
    if (problem := _check_sequence_fit(kind, train, max_seq_len)) is not None:
        return _check(name, "fail", problem)
    t0 = time.perf_counter()
    seed_everything(seed)
    cfg = model_config(kind, hidden_dim, max_seq_len, dropout=None)  # the real run's dropout
    model, pad_id = build_model(kind, cfg, data_dir)
    model.to(device).train()
    sizes = _graph_sizes(train) if kind == "gnn" else _sequence_lengths(train)
    idx = _largest(sizes, batch_size)
    batch = Batches(train, kind, pad_id).make(idx, device)
    amp_dtype, _ = amp_settings("auto", device)
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    grads = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    adam = 2 * sum(p.numel() * 4 for p in params if p.requires_grad)  # fp32 exp_avg, exp_avg_sq

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = forward_logits(kind, model, batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        loss.backward()

    figures: dict[str, Any]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(model, batch)
        torch.cuda.synchronize(device)
        measured = float(torch.cuda.max_memory_allocated(device))
        method = (
            "torch.cuda.max_memory_allocated over one forward+backward (weights, activations, "
            "gradients) + 2x fp32 parameters for the AdamW state; the CUDA context and allocator "
            "fragmentation are not counted"
        )
        figures = {"peak_reserved_mb": round(torch.cuda.max_memory_reserved(device) / MB, 1)}
    else:
        with _PeakRSS() as rss:
            step(model, batch)
        measured = float(weights + rss.peak_delta)
        method = (
            f"CPU: {rss.method} after gc + malloc_trim (peak growth of the resident set over one "
            "forward+backward, max'd with the ru_maxrss growth; activations and gradients) + "
            "parameter bytes "
            "(already resident) + 2x fp32 parameters for the AdamW state; at least weights + "
            "gradients"
        )
        figures = {"rss_peak_growth_mb": round(rss.peak_delta / MB, 2)}
    required = max(measured, float(weights + grads)) + adam
    fixed = float(weights + grads + adam)
    figures.update(
        batch_size=batch_size,
        largest_example=int(sizes.max()),
        batch_size_unit="graph nodes" if kind == "gnn" else "tokens",
        batch_total=int(sizes[idx].sum()),
        amp_dtype=str(amp_dtype) if amp_dtype is not None else None,
        parameters=sum(p.numel() for p in params),
        weights_mb=round(weights / MB, 2),
        optimizer_state_mb=round(adam / MB, 2),
        required_mb=round(required / MB, 2),
        capacity_mb=round(capacity_mb, 1) if capacity_mb is not None else None,
        capacity_source=capacity_source,
        method=method,
    )
    if kind == "gnn":
        figures["preprocessing_recommendation"] = _gnn_recommendation(data_dir, cfg, capacity_mb)
    del batch, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    if capacity_mb is None:
        return _check(name, "warn", f"needs ~{required / MB:.1f} MB; capacity unknown", **figures)
    fraction = required / (capacity_mb * MB)
    figures["fraction"] = round(fraction, 4)
    summary = (
        f"batch {batch_size} of the largest examples needs ~{required / MB:.1f} MB, "
        f"{fraction:.1%} of {capacity_mb:.0f} MB"
    )
    if fraction <= MEMORY_WARN_FRACTION:
        return _check(name, "pass", summary, **figures)
    suggested, why = suggest_batch_size(batch_size, required, fixed, capacity_mb * MB)
    figures.update(suggested_batch_size=suggested, suggestion_basis=why)
    status: Status = "fail" if fraction > MEMORY_FAIL_FRACTION else "warn"
    return _check(name, status, f"{summary}; try --batch-size {suggested} ({why})", **figures)


def _gnn_recommendation(data_dir: Path, cfg: Any, capacity_mb: float | None) -> dict[str, Any]:
    """preprocess.recommend_batch_size for this capacity (the p95-graph estimate)."""
    from streamguard_core.preprocess.run import recommend_batch_size

    stats = load_metadata(data_dir).get("graph_stats", {}).get("all", {})
    budget = capacity_mb if capacity_mb is not None else 2048.0
    return recommend_batch_size(
        stats.get("nodes_p95", 0.0),
        stats.get("edges_p95", 0.0),
        budget,
        cfg.hidden_dim,
        cfg.num_layers,
    )


# --------------------------------------------------------------------------- filesystem


def check_lr_cache(cache_dir: Path) -> dict[str, Any]:
    """The LR cache directory can be created, written and cleaned."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".preflight.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"preflight": True}))
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        return _check("lr_cache", "fail", f"{cache_dir}: not writable ({exc})", path=cache_dir)
    return _check("lr_cache", "pass", f"{cache_dir} is writable", path=cache_dir)


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def check_disk(output: Path) -> dict[str, Any]:
    """Free space at the output location."""
    where = _existing_ancestor(output.parent.resolve())
    usage = shutil.disk_usage(where)
    free_gb = usage.free / 1024**3
    figures = {
        "path": where,
        "free_gb": round(free_gb, 2),
        "total_gb": round(usage.total / 1024**3, 2),
    }
    detail = f"{free_gb:.1f} GB free at {where}"
    if free_gb < DISK_FAIL_GB:
        return _check("disk", "fail", f"{detail} (< {DISK_FAIL_GB:g} GB)", **figures)
    if free_gb < DISK_WARN_GB:
        return _check("disk", "warn", f"{detail} (< {DISK_WARN_GB:g} GB)", **figures)
    return _check("disk", "pass", detail, **figures)


# --------------------------------------------------------------------------- driver


def _guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a check; an exception is that check's failure, never the preflight's crash."""
    try:
        return fn()
    except Exception as exc:
        return _check(name, "fail", f"{type(exc).__name__}: {str(exc)[:500]}")


def format_check(check: dict[str, Any]) -> str:
    """One line: ``[PASS] name: detail``."""
    return f"[{check['status'].upper():4s}] {check['name']}: {check['detail']}"


def run_preflight(
    data_dir: str | Path,
    models: Sequence[str] = KINDS,
    batch_size: int = 32,
    max_seq_len: int = 512,
    hidden_dims: dict[str, int] | None = None,
    device: str | None = None,
    lr_cache_dir: str | Path | None = None,
    output: str | Path = "preflight_report.json",
    overfit_steps: int = 60,
    memory_capacity_mb: float | None = None,
    seed: int = 42,
    num_threads: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every check, write the report to ``output`` atomically and return it.

    Args:
        data_dir: a processed data set (``streamguard data preprocess``).
        models: kinds to test, any of ``gnn``, ``transformer``, ``baseline``.
        batch_size: the planned training batch size (memory test).
        max_seq_len: the transformer's position limit.
        hidden_dims: per-kind hidden size (default: gnn 256, transformer 128).
        device: ``cpu``/``cuda``/``cuda:N``; None: CUDA when available.
        lr_cache_dir: the LR finder cache (default ``~/.cache/streamguard/lr``).
        output: where ``preflight_report.json`` goes.
        overfit_steps: most full-batch steps of the neural smoke tests.
        memory_capacity_mb: override the memory capacity (default: the GPU's total memory, else
            the machine's available RAM).
        num_threads: torch CPU threads during the checks (restored afterwards).
        echo: called with one line per finished check (e.g. ``print``).

    Returns:
        ``{"go", "checks", "device", "created", ...}``; ``go`` is False when any check failed.
    """
    unknown = sorted(set(models) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown model kind(s) {unknown}; choose from {list(KINDS)}")
    if batch_size < 1 or overfit_steps < 0:
        raise ValueError("batch_size must be >= 1 and overfit_steps >= 0")
    data_dir, output = Path(data_dir), Path(output)
    cache_dir = Path(lr_cache_dir or DEFAULT_LR_CACHE_DIR).expanduser()
    hidden = {**(hidden_dims or {})}
    previous_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        started = time.perf_counter()
        checks: list[dict[str, Any]] = []

        def record(check: dict[str, Any]) -> None:
            checks.append(check)
            if echo is not None:
                echo(format_check(check))

        try:
            dev = resolve_device(device)
        except RuntimeError as exc:
            raise ValueError(f"invalid device {device!r}: {exc}") from exc
        device_info = _guarded_info(dev)
        record(_guarded("device", lambda: check_device(device, dev)))
        device_ok = checks[-1]["status"] != "fail"
        capacity: float | None
        if memory_capacity_mb is not None:
            capacity, capacity_source = float(memory_capacity_mb), "--memory-capacity-mb override"
        elif device_ok:
            capacity, capacity_source = memory_capacity(dev)
        else:
            capacity, capacity_source = None, "unknown (device unavailable)"
        device_info["memory_capacity_mb"] = round(capacity, 1) if capacity is not None else None
        device_info["memory_capacity_source"] = capacity_source

        data_check, train = _guarded_data(data_dir)
        record(data_check)
        for kind in _ordered(models):
            tests: Iterable[str] = ("overfit", "memory") if kind in NEURAL_KINDS else ("overfit",)
            for test in tests:
                name = f"{test}:{kind}"
                if train is None:
                    record(_check(name, "fail", "not run: the data check failed", skipped=True))
                    continue
                if kind in NEURAL_KINDS and not device_ok:
                    record(_check(name, "fail", "not run: the device is unavailable", skipped=True))
                    continue
                if name == "overfit:baseline":
                    fn = partial(check_overfit_baseline, train, seed)
                elif test == "overfit":
                    fn = partial(
                        check_overfit_neural,
                        kind,
                        data_dir,
                        train,
                        hidden.get(kind),
                        max_seq_len,
                        dev,
                        overfit_steps,
                        seed,
                    )
                else:
                    fn = partial(
                        check_memory,
                        kind,
                        data_dir,
                        train,
                        hidden.get(kind),
                        max_seq_len,
                        dev,
                        batch_size,
                        capacity,
                        capacity_source,
                        seed,
                    )
                record(_guarded(name, fn))
        record(_guarded("lr_cache", lambda: check_lr_cache(cache_dir)))
        record(_guarded("disk", lambda: check_disk(output)))

        report = {
            "go": all(c["status"] != "fail" for c in checks),
            "checks": checks,
            "device": device_info,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "data_dir": data_dir,
            "settings": {
                "models": list(_ordered(models)),
                "batch_size": batch_size,
                "max_seq_len": max_seq_len,
                "hidden_dims": hidden,
                "overfit_steps": overfit_steps,
                "lr_cache_dir": cache_dir,
                "memory_capacity_mb": memory_capacity_mb,
                "seed": seed,
                "num_threads": torch.get_num_threads(),
            },
            "counts": {s: sum(c["status"] == s for c in checks) for s in ("pass", "warn", "fail")},
            "seconds": round(time.perf_counter() - started, 2),
        }
        atomic_write_json(output, report)
        return report
    finally:
        torch.set_num_threads(previous_threads)


def _ordered(models: Sequence[str]) -> list[str]:
    return [k for k in KINDS if k in set(models)]


def _guarded_info(dev: torch.device) -> dict[str, Any]:
    try:
        return device_report(dev)
    except Exception as exc:
        return {"selected": str(dev), "error": f"{type(exc).__name__}: {exc}"}


def _guarded_data(data_dir: Path) -> tuple[dict[str, Any], ProcessedSplit | None]:
    try:
        return check_data(data_dir)
    except Exception as exc:
        return _check("data", "fail", f"{type(exc).__name__}: {str(exc)[:500]}"), None
