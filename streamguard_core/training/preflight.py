"""Go/no-go checks of a :class:`~streamguard_core.config.TrainingPlan` before a long training run
(``streamguard preflight``, the pipeline's preflight task).

Every model of the plan is checked under its run name with exactly the configuration its runs
get: its full model config (a transformer's ``max_seq_len`` resolved against the data set, as
:func:`~streamguard_core.training.run.resolve_spec` does for a run), built by its adapter, and the
plan's training settings (batch size, accumulation, mixed precision, threads, seed
``plan.seeds[0]``). Each check returns ``{"name", "status": "pass"|"warn"|"fail", "detail",
...figures}``; any ``fail`` makes the run a no-go, warnings do not block. The checks:

``device``
    the requested device exists (the full device report is the report's ``device`` key).
``data``
    the directory is a processed data set: ``preprocessing_metadata.json``, non-empty train and
    valid splits, both labels in train.
``overfit:<run name>``
    a smoke test through the real training loop (:func:`~streamguard_core.training.loop.setup`
    -> :func:`~streamguard_core.training.loop.fit`: schedule, clipping, AMP, collapse detection)
    on 32 training examples of both classes, with no dropout and a fixed smoke-test learning
    rate, for at most ``overfit_steps`` optimizer steps: the model must reach >= 95% accuracy on
    them. Examples identical (as the model sees them) to one of the other label are left out.
    The baseline fits the plan's TF-IDF + logistic regression with ``min_df=1, C=100``. A model
    that cannot memorise 32 examples has a bug (or the data's labels do not follow its inputs).
    A transformer whose ``max_seq_len`` differs from the data set's, or exceeds a pretrained
    model's positions, fails here and in its memory test.
``memory:<run name>``
    one forward + backward at the plan's batch size on the train split's largest examples
    (most graph nodes / longest token sequences) under the run's autocast dtype, plus the AdamW
    state a real step allocates, compared with the memory capacity: warn above 90%, fail above
    100% with a batch size that fits.
``lr_cache``
    the learning-rate finder's cache directory (``plan.train.lr_cache_dir``) can be written.
``disk``
    free space where the report (and so the run) goes: warn under 5 GB, fail under 1 GB.

:func:`run_preflight` writes ``preflight_report.json`` atomically and returns it; its
``models`` entry holds each model's resolved config and parameter count.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import hashlib
import importlib
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from streamguard_core.config import (
    TINY,
    BaselineConfig,
    GNNConfig,
    TrainingPlan,
    TrainJobSpec,
    TransformerConfig,
)
from streamguard_core.io import atomic_write_json
from streamguard_core.models.adapters import adapter_for, resolve_device
from streamguard_core.preprocess.dataset import ProcessedDataset, ProcessedSplit
from streamguard_core.training.batch_size import (
    CPU_BUDGET_MB,
    MB,
    TARGET_FRACTION,
    largest_examples,
    recommend_batch_size,
    suggest_batch_size,
)

Status = Literal["pass", "warn", "fail"]
OVERFIT_LR = {"gnn": 2e-3, "transformer": 1e-3}
"""Smoke-test learning rates of models trained from scratch. (The GCN at 3e-3 oscillated and
needed up to ~70 steps on the synthetic set; 2e-3 reached 95% in 33-49 steps for hidden 64 and
256 over three seeds.)"""
PRETRAINED_OVERFIT_LR = 1e-4
"""Smoke-test learning rate of a pretrained transformer: a few times a fine-tuning rate, since
32 examples must be memorised within ``overfit_steps``; 1e-3 would wreck pretrained weights."""
BASELINE_OVERFIT_C = 100.0
"""Weak regularisation for the baseline smoke test: at the default C=1 logistic regression does
not fit 32 near-identical vulnerable/fixed pairs (84-88% train accuracy); C=100 fits them."""
OVERFIT_SAMPLES = 32
OVERFIT_ACCURACY = 0.95
MEMORY_WARN_FRACTION = TARGET_FRACTION
MEMORY_FAIL_FRACTION = 1.0
DISK_WARN_GB = 5.0
DISK_FAIL_GB = 1.0
INPUT_VIEW = {"transformer": "tokens", "gnn": "graph", "baseline": "text"}
"""What each model kind reads of an example (for telling examples apart)."""


def _check(name: str, status: Status, detail: str, **figures: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, **figures}


# --------------------------------------------------------------------------- device


def device_report(device: torch.device, mixed_precision: str = "auto") -> dict[str, Any]:
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
    amp_dtype, scaler = amp_settings(mixed_precision, device) if usable else (None, False)
    return {
        "selected": str(device),
        "torch_version": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": devices,
        "mps_available": bool(mps is not None and mps.is_available()),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "mixed_precision": mixed_precision,
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
    """The device exists (CPU with CUDA present is a warning)."""
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


@dataclass
class TrainData:
    """The train split of a data set that passed the data check, and per input view the mask of
    examples identical to one of the other label (see :func:`label_conflicts`)."""

    data: ProcessedDataset
    split: ProcessedSplit
    conflicts: dict[str, np.ndarray] = field(default_factory=dict)


def check_data(data_dir: Path, views: list[str]) -> tuple[dict[str, Any], TrainData | None]:
    """The data set check and, when it passes, the train split (label conflicts per view)."""
    if not data_dir.is_dir():
        return _check("data", "fail", f"{data_dir}: no such directory"), None
    try:
        data = ProcessedDataset(data_dir)
    except FileNotFoundError as exc:
        return _check("data", "fail", f"{exc} (not preprocessed)"), None
    data.metadata  # noqa: B018 (validates the metadata file; a bad one fails this check)
    counts: dict[str, int] = {}
    splits: dict[str, ProcessedSplit] = {}
    for name in ("train", "valid", "test"):
        try:
            splits[name] = data.split(name)
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
    train = TrainData(data, splits["train"])
    train.conflicts = {view: label_conflicts(train.split, view) for view in views}
    conflicts = {view: int(mask.sum()) for view, mask in train.conflicts.items()}
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


def _two_classes(labels: np.ndarray, conflicting: np.ndarray) -> str | None:
    if len(np.unique(labels)) == 2:
        return None
    return (
        f"no training examples of both classes to overfit ({int(conflicting.sum())} excluded as "
        "identical to an example of the other label)"
    )


# --------------------------------------------------------------------------- models


def sequence_length_problem(spec: TrainJobSpec, data: ProcessedDataset) -> str | None:
    """Why a transformer's (resolved) ``max_seq_len`` does not suit the data set, or None.

    The data set's sequences were encoded to its own ``max_seq_len``: a model with fewer
    positions cannot embed them, and a larger setting is a configuration mistake (the run would
    never see more than the data's budget). A pretrained model's own position limit is checked
    when it is built.
    """
    cfg = spec.model
    if not isinstance(cfg, TransformerConfig) or cfg.max_seq_len is None:
        return None
    budget = data.max_seq_len
    if cfg.max_seq_len > budget:
        return (
            f"max_seq_len {cfg.max_seq_len} is above the data set's {budget}: its sequences were "
            f"cut to {budget} tokens at preprocessing; preprocess with max_seq_len "
            f"{cfg.max_seq_len}, or leave the model's max_seq_len empty (the data set's)"
        )
    if cfg.max_seq_len < budget:
        return (
            f"max_seq_len {cfg.max_seq_len} is below the data set's {budget}: the model cannot "
            f"take sequences of up to {budget} tokens; leave the model's max_seq_len empty (the "
            "data set's), or preprocess with a smaller one"
        )
    return None


def build_model(spec: TrainJobSpec, **overrides: Any) -> tuple[torch.nn.Module, int]:
    """The spec's model (``overrides`` applied to its config), seeded as the run seeds it."""
    from streamguard_core.training.loop import seed_everything

    seed_everything(spec.seed)
    cfg = spec.model.model_copy(update=overrides) if overrides else spec.model
    return adapter_for(cfg.kind).build(cfg, Path(spec.data_dir))


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())


def describe_model(spec: TrainJobSpec) -> dict[str, Any]:
    """The report's ``models`` entry: kind, resolved config and parameter count (None for the
    baseline, whose size depends on the vocabulary it fits, and for a model that fails to
    build, with the reason under ``error``)."""
    entry: dict[str, Any] = {
        "kind": spec.model.kind,
        "config": spec.model.model_dump(mode="json"),
        "parameters": None,
    }
    if isinstance(spec.model, BaselineConfig):
        return entry
    try:
        model, _ = build_model(spec)
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        return entry
    entry["parameters"] = count_parameters(model)
    return entry


def overfit_lr(spec: TrainJobSpec) -> float:
    """The smoke test's fixed learning rate for the spec's model."""
    cfg = spec.model
    if isinstance(cfg, TransformerConfig) and cfg.model_name_or_path != TINY:
        return PRETRAINED_OVERFIT_LR
    return OVERFIT_LR[cfg.kind]


def passes_over(indices: np.ndarray, passes: int, seed: int) -> np.ndarray:
    """``passes`` passes over ``indices``, each in its own seeded order, one after the other."""
    rng = np.random.default_rng([seed, len(indices)])
    return np.concatenate([rng.permutation(indices) for _ in range(passes)])


def check_overfit_neural(
    spec: TrainJobSpec, train: TrainData, device: torch.device, max_passes: int
) -> dict[str, Any]:
    """The real ``setup -> fit`` path on 32 examples until they are memorised (>= 95%).

    The smoke run is one epoch of up to ``max_passes`` passes over the 32 examples, each pass in
    a new seeded order (so a batch size >= 32 is full-batch, as a memorisation test needs:
    random batches drawn from repeats of the 32 needed about twice the steps). It has the
    plan's batch size, accumulation, warmup + linear decay, clipping, AMP and collapse
    detection, but dropout 0, the fixed :func:`overfit_lr` and no LR finder, batch sizing or
    sample weights. It stops as soon as accuracy on the 32 reaches the bar, checked about once
    per pass. Its files go to a temporary directory under ``spec.run_dir``.
    """
    from streamguard_core.training.collapse import CollapseError
    from streamguard_core.training.loop import (
        Batches,
        TrainingInterrupted,
        fit,
        predict,
        setup,
    )

    name = f"overfit:{spec.name}"
    kind = spec.model.kind
    if (problem := sequence_length_problem(spec, train.data)) is not None:
        return _check(name, "fail", problem)
    t0 = time.perf_counter()
    conflicting = train.conflicts[INPUT_VIEW[kind]]
    idx = overfit_indices(train.split.labels, OVERFIT_SAMPLES, spec.seed, exclude=conflicting)
    if (problem := _two_classes(train.split.labels[idx], conflicting)) is not None:
        return _check(name, "fail", problem)
    lr = overfit_lr(spec)
    per_step = spec.train.batch_size * spec.train.accumulation_steps  # examples per step
    sequence = passes_over(idx, max(max_passes, 1), spec.seed)
    max_steps = math.ceil(math.ceil(len(sequence) / spec.train.batch_size)
                          / spec.train.accumulation_steps) if max_passes else 0  # fmt: skip
    cfg = spec.train.model_copy(
        update={
            "lr": lr, "lr_finder": False, "auto_batch_size": False, "use_weights": False,
            "epochs": 1, "max_steps_per_epoch": None,
            "checkpoint_every_steps": max_steps + 1,  # no periodic checkpoints
        }
    )  # fmt: skip
    model, pad_id = build_model(spec, dropout=0.0)
    labels = train.split.labels[idx]
    memorised = Batches(train.split, kind, pad_id, subset=idx)
    check_every = max(1, len(idx) // per_step)  # about once per pass
    accuracy, loss, event = 0.0, float("nan"), None

    def measure(m: torch.nn.Module, dev: torch.device) -> None:
        nonlocal accuracy, loss
        probs = predict(kind, m, memorised, dev, cfg.batch_size)
        accuracy = float(((probs >= 0.5).astype(int) == labels).mean())
        p_label = np.clip(np.where(labels == 1, probs, 1.0 - probs), 1e-12, 1.0)
        loss = float(-np.log(p_label).mean())

    run_root = Path(spec.run_dir)
    run_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="overfit-", dir=run_root) as run_dir:
        state = setup(
            kind, model, spec.data_dir, run_dir, cfg, device=device, pad_id=pad_id, lr=lr,
            lr_source="preflight smoke test", train_subset=sequence,
        )  # fmt: skip
        state.valid = memorised  # the epoch-end evaluation, too, is of the 32 examples

        def reached() -> bool:
            if state.global_step % check_every:
                return False
            measure(state.model, state.device)
            return accuracy >= OVERFIT_ACCURACY

        state.should_stop = reached
        measure(state.model, state.device)
        if max_passes and accuracy < OVERFIT_ACCURACY:
            try:
                fit(state)
                measure(state.model, state.device)
            except TrainingInterrupted:
                pass  # memorised: reached() stopped the run
            except CollapseError as exc:
                event = exc.event
        figures = {
            "accuracy": round(accuracy, 4),
            "steps": state.global_step,
            "max_steps": max_steps,
            "passes": round(min(state.global_step * per_step, len(sequence)) / len(idx), 2),
            "max_passes": max_passes,
            "final_loss": round(loss, 6) if np.isfinite(loss) else None,
            "samples": len(idx),
            "positives": int(labels.sum()),
            "excluded_conflicting": int(conflicting.sum()),
            "lr": lr,
            "batch_size": cfg.batch_size,
            "accumulation_steps": cfg.accumulation_steps,
            "amp_dtype": str(state.amp_dtype) if state.amp_dtype is not None else None,
            "skipped_non_finite_steps": state.skipped_steps,
            "parameters": count_parameters(state.model),
        }
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    if event is not None:
        return _check(
            name, "fail", f"the smoke run collapsed ({event.reason}): {event.detail}",
            collapse=event.to_dict(), **figures,
        )  # fmt: skip
    if not np.isfinite(loss):
        return _check(name, "fail", f"loss became non-finite after {figures['steps']} steps",
                      **figures)  # fmt: skip
    summary = (
        f"train accuracy {accuracy:.3f} on {len(idx)} examples after {figures['steps']} steps "
        f"({figures['passes']} passes, loss {loss:.4f})"
    )
    if accuracy >= OVERFIT_ACCURACY:
        return _check(name, "pass", summary, **figures)
    return _check(
        name, "fail", f"{summary}; cannot memorise {len(idx)} examples (a model or data bug)",
        **figures,
    )  # fmt: skip


def check_overfit_baseline(spec: TrainJobSpec, train: TrainData) -> dict[str, Any]:
    """The plan's TF-IDF + logistic regression (with ``min_df=1, C=100``) fitted on 32 examples
    must classify them."""
    from streamguard_core.models.baseline import BaselineDetector

    name = f"overfit:{spec.name}"
    t0 = time.perf_counter()
    conflicting = train.conflicts[INPUT_VIEW["baseline"]]
    idx = overfit_indices(train.split.labels, OVERFIT_SAMPLES, spec.seed, exclude=conflicting)
    if (problem := _two_classes(train.split.labels[idx], conflicting)) is not None:
        return _check(name, "fail", problem)
    funcs = [str(train.split.records[int(i)]["func"]) for i in idx]
    labels = train.split.labels[idx]
    assert isinstance(spec.model, BaselineConfig)
    # memorising 32 functions: no vocabulary cut, weak regularisation, one-function leaves
    cfg = spec.model.model_copy(
        update={"min_df": 1, "C": BASELINE_OVERFIT_C, "tree_min_samples_leaf": 1}
    )
    det = BaselineDetector(cfg, seed=spec.seed)
    det.fit(funcs, labels)
    accuracy = float(((det.predict_proba(funcs) >= 0.5).astype(int) == labels).mean())
    figures = {
        "accuracy": round(accuracy, 4),
        "samples": len(idx),
        "positives": int(labels.sum()),
        "excluded_conflicting": int(conflicting.sum()),
        "vocabulary_size": det.metadata.get("vocabulary_size"),
        "C": BASELINE_OVERFIT_C,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    summary = f"train accuracy {accuracy:.3f} on {len(idx)} examples"
    if accuracy >= OVERFIT_ACCURACY:
        return _check(name, "pass", summary, **figures)
    return _check(name, "fail", f"{summary}; cannot memorise them", **figures)


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


def check_memory(
    spec: TrainJobSpec,
    train: TrainData,
    device: torch.device,
    capacity_mb: float | None,
    capacity_source: str,
) -> dict[str, Any]:
    """One forward + backward at the plan's batch size on the largest training examples, under
    the run's autocast dtype, plus the AdamW state."""
    from streamguard_core.training.loop import Batches, amp_settings

    name = f"memory:{spec.name}"
    kind = spec.model.kind
    if (problem := sequence_length_problem(spec, train.data)) is not None:
        return _check(name, "fail", problem)
    t0 = time.perf_counter()
    batch_size = spec.train.batch_size
    adapter = adapter_for(kind)
    model, pad_id = build_model(spec)  # the run's config, dropout included
    model.to(device).train()
    sizes = adapter.sizes(train.split)
    idx = largest_examples(sizes, batch_size)
    batch = Batches(train.split, kind, pad_id).make(idx, device)
    amp_dtype, _ = amp_settings(spec.train.mixed_precision, device)
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    grads = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    adam = 2 * sum(p.numel() * 4 for p in params if p.requires_grad)  # fp32 exp_avg, exp_avg_sq

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = adapter.forward(model, batch)
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
            "parameter bytes (already resident) + 2x fp32 parameters for the AdamW state; at "
            "least weights + gradients"
        )
        figures = {"rss_peak_growth_mb": round(rss.peak_delta / MB, 2)}
    required = max(measured, float(weights + grads)) + adam
    fixed = float(weights + grads + adam)
    figures.update(
        batch_size=batch_size,
        accumulation_steps=spec.train.accumulation_steps,
        largest_example=int(sizes.max()),
        batch_size_unit=adapter.size_unit,
        batch_total=int(sizes[idx].sum()),
        amp_dtype=str(amp_dtype) if amp_dtype is not None else None,
        parameters=count_parameters(model),
        weights_mb=round(weights / MB, 2),
        optimizer_state_mb=round(adam / MB, 2),
        required_mb=round(required / MB, 2),
        capacity_mb=round(capacity_mb, 1) if capacity_mb is not None else None,
        capacity_source=capacity_source,
        method=method,
    )
    if isinstance(spec.model, GNNConfig):
        figures["preprocessing_recommendation"] = _gnn_recommendation(train.data, spec, capacity_mb)
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
    return _check(name, status, f"{summary}; try batch_size {suggested} ({why})", **figures)


def _gnn_recommendation(
    data: ProcessedDataset, spec: TrainJobSpec, capacity_mb: float | None
) -> dict[str, Any]:
    """The graph-statistics estimate (p95 graph) of the batch size for this capacity."""
    assert isinstance(spec.model, GNNConfig)
    stats = data.metadata.graph_stats.get("all", {})
    return recommend_batch_size(
        stats.get("nodes_p95", 0.0),
        stats.get("edges_p95", 0.0),
        capacity_mb if capacity_mb is not None else CPU_BUDGET_MB,
        spec.model.hidden_dim,
        spec.model.num_layers,
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


def plan_specs(plan: TrainingPlan, data_dir: Path, work_dir: Path) -> list[TrainJobSpec]:
    """The job of each model at ``plan.seeds[0]``, resolved against the data set where it can
    be (a transformer's empty ``max_seq_len``), running in ``work_dir/<run name>``."""
    from streamguard_core.training.run import resolve_spec

    specs = []
    for model in plan.models:
        spec = TrainJobSpec(
            model=model, train=plan.train, seed=plan.seeds[0], data_dir=str(data_dir),
            run_dir=str(work_dir / model.run_name),
        )  # fmt: skip
        with contextlib.suppress(FileNotFoundError, ValueError):  # the data check says why
            spec = resolve_spec(spec)
        specs.append(spec)
    return specs


def run_preflight(
    data_dir: str | Path,
    plan: TrainingPlan,
    *,
    device: str | None = None,
    output: str | Path = "preflight_report.json",
    overfit_steps: int = 100,
    memory_capacity_mb: float | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Check exactly the models ``plan`` will train; write the report to ``output`` atomically
    and return it.

    Args:
        data_dir: a processed data set (``streamguard data preprocess``).
        plan: the training plan; every model is checked under its run name with its full
            config, the plan's ``train`` settings (batch size, accumulation, mixed precision,
            threads, LR cache) and seed ``plan.seeds[0]``.
        device: ``cpu``/``cuda``/``cuda:N``; None: CUDA when available.
        output: where ``preflight_report.json`` goes (the smoke runs' scratch files go beside
            it, in a temporary directory removed afterwards).
        overfit_steps: the budget of each neural smoke test in passes over its 32 examples,
            i.e. optimizer steps at a batch size >= 32 without accumulation (a smaller batch
            takes proportionally more steps per pass).
        memory_capacity_mb: override the memory capacity (default: the GPU's total memory, else
            the machine's available RAM).
        echo: called with one line per finished check (e.g. ``print``).

    Returns:
        ``{"go", "checks", "models", "device", "created", "settings", ...}``; ``go`` is False
        when any check failed; ``models`` maps each run name to ``{"kind", "config" (resolved),
        "parameters"}``.

    Raises:
        ValueError: ``overfit_steps`` < 0 or an unparseable device.
    """
    if overfit_steps < 0:
        raise ValueError("overfit_steps must be >= 0")
    data_dir, output = Path(data_dir), Path(output)
    previous_threads = torch.get_num_threads()
    if plan.train.num_threads:
        torch.set_num_threads(plan.train.num_threads)
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from exc
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".preflight-", dir=output.parent) as work:
            report = _run_checks(
                data_dir, plan, device, dev, Path(work), output, overfit_steps,
                memory_capacity_mb, echo,
            )  # fmt: skip
        atomic_write_json(output, report)
        return report
    finally:
        torch.set_num_threads(previous_threads)


def _run_checks(
    data_dir: Path, plan: TrainingPlan, requested: str | None, dev: torch.device, work: Path,
    output: Path, overfit_steps: int, memory_capacity_mb: float | None,
    echo: Callable[[str], None] | None,
) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    cache_dir = Path(plan.train.lr_cache_dir).expanduser()
    checks: list[dict[str, Any]] = []

    def record(check: dict[str, Any]) -> None:
        checks.append(check)
        if echo is not None:
            echo(format_check(check))

    device_info = _guarded_info(dev, plan.train.mixed_precision)
    record(_guarded("device", lambda: check_device(requested, dev)))
    device_ok = checks[-1]["status"] != "fail"
    capacity: float | None
    if memory_capacity_mb is not None:
        capacity, capacity_source = float(memory_capacity_mb), "memory_capacity_mb override"
    elif device_ok:
        capacity, capacity_source = memory_capacity(dev)
    else:
        capacity, capacity_source = None, "unknown (device unavailable)"
    device_info["memory_capacity_mb"] = round(capacity, 1) if capacity is not None else None
    device_info["memory_capacity_source"] = capacity_source

    views = list(dict.fromkeys(INPUT_VIEW[m.kind] for m in plan.models))
    data_check, train = _guarded_data(data_dir, views)
    record(data_check)
    specs = plan_specs(plan, data_dir, work)
    models: dict[str, dict[str, Any]] = {}
    for spec in specs:
        models[spec.name] = describe_model(spec)
        neural = not isinstance(spec.model, BaselineConfig)
        for test in ("overfit", "memory") if neural else ("overfit",):
            name = f"{test}:{spec.name}"
            if train is None:
                record(_check(name, "fail", "not run: the data check failed", skipped=True))
                continue
            if neural and not device_ok:
                record(_check(name, "fail", "not run: the device is unavailable", skipped=True))
                continue
            fn: Callable[[], dict[str, Any]]
            if not neural:
                fn = partial(check_overfit_baseline, spec, train)
            elif test == "overfit":
                fn = partial(check_overfit_neural, spec, train, dev, overfit_steps)
            else:
                fn = partial(check_memory, spec, train, dev, capacity, capacity_source)
            record(_guarded(name, fn))
    record(_guarded("lr_cache", lambda: check_lr_cache(cache_dir)))
    record(_guarded("disk", lambda: check_disk(output)))
    return {
        "go": all(c["status"] != "fail" for c in checks),
        "checks": checks,
        "models": models,
        "device": device_info,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data_dir": data_dir,
        "settings": {
            "plan": plan.model_dump(mode="json"),
            "seed": plan.seeds[0],
            "overfit_steps": overfit_steps,
            "lr_cache_dir": cache_dir,
            "memory_capacity_mb": memory_capacity_mb,
            "num_threads": torch.get_num_threads(),
        },
        "counts": {s: sum(c["status"] == s for c in checks) for s in ("pass", "warn", "fail")},
        "seconds": round(time.perf_counter() - started, 2),
    }


def _guarded_info(dev: torch.device, mixed_precision: str) -> dict[str, Any]:
    try:
        return device_report(dev, mixed_precision)
    except Exception as exc:
        return {"selected": str(dev), "error": f"{type(exc).__name__}: {exc}"}


def _guarded_data(data_dir: Path, views: list[str]) -> tuple[dict[str, Any], TrainData | None]:
    try:
        return check_data(data_dir, views)
    except Exception as exc:
        return _check("data", "fail", f"{type(exc).__name__}: {str(exc)[:500]}"), None
