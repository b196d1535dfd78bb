"""Training-step throughput of the engine vs a bare PyTorch loop, printed as one JSON line.

Engine: ``streamguard_core.training.loop.setup`` + ``fit`` (one epoch cut to --steps optimizer
steps, no mid-epoch checkpoint), the real code path. fit also validates once and writes the
epoch/latest/best checkpoints and training_metadata.json at the end of the epoch; those calls are
timed inside the same fit (the loop's module-level predict/metrics/save functions are wrapped
with a timer, nothing else changes) and reported as eval_s and io_s:

    engine_samples_per_s                    = samples / (fit_s - eval_s - io_s)
    engine_samples_per_s_including_eval_io  = samples / fit_s

Bare: the same model class, config and init seed, the same batches (epoch_order(n, seed, 0),
Batches.make per step, same threads), forward_logits -> weighted cross_entropy -> backward ->
clip_grad_norm_ -> AdamW.step -> zero_grad; no scheduler, checkpoints or collapse checks.

The two paths run interleaved, one bare step after each engine step (called from the engine's
per-step collapse hook and subtracted from fit's time), each with its own model, optimizer and
torch RNG stream, so load that drifts on a shared machine hits both alike; the two first losses
(engine normalisation) must agree (first_loss_match). ratio_to_bare_median_step compares median
step times, which resists bursts of load better than the totals. Both paths are warmed up first
the same way on separate model instances (--warmup-steps).

Data: a processed data set built in a temp dir from --input (Devign, random split,
max_seq_len 256, BPE vocab 4000); the embedded synthetic data set when the file is absent.
Defaults (20 steps of 16, lowered from 30 to fit ~3 minutes; 3 warm-up steps; both kinds) take
an estimated 1-2 minutes on an idle 2-core CPU (from per-step CPU time), measured 3-5 minutes on
one shared with other jobs, where --threads 1 was faster (torch threads fighting other processes
for the cores); --steps 10 for a quicker look.

    python bench/train.py [--input ../shared/data/devign_valid.jsonl.gz] [--steps 20]
        [--batch-size 16] [--threads 0] [--kinds transformer,gnn]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KINDS = ("transformer", "gnn")


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _timed_calls(module: Any, groups: dict[str, tuple[str, ...]]) -> Iterator[dict[str, float]]:
    """Wrap ``module.<name>`` with a timer for the duration; seconds summed per group."""
    totals = dict.fromkeys(groups, 0.0)
    originals: dict[str, Callable[..., Any]] = {}

    def wrap(group: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[group] += time.perf_counter() - t0

        return timed

    for group, names in groups.items():
        for name in names:
            originals[name] = getattr(module, name)
            setattr(module, name, wrap(group, originals[name]))
    try:
        yield totals
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def _build(kind: str, data_dir: Path, seed: int) -> tuple[Any, int]:
    """The kind's default model (its config's defaults) for the data set, seeded."""
    from streamguard_core.config import model_config_for
    from streamguard_core.models.adapters import adapter_for
    from streamguard_core.training.loop import seed_everything

    seed_everything(seed)
    return adapter_for(kind).build(model_config_for(kind), data_dir)


class _Bare:
    """The plain PyTorch loop over the same batches, one step at a time, with its own RNG."""

    def __init__(self, kind: str, data_dir: Path, cfg: Any, lr: float) -> None:
        import torch

        from streamguard_core.preprocess.dataset import ProcessedSplit
        from streamguard_core.training import loop

        self.kind, self.cfg = kind, cfg
        self.model, pad_id = _build(kind, data_dir, cfg.seed)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).train()
        self.data = loop.Batches(ProcessedSplit(data_dir, "train"), kind, pad_id)
        self.order = loop.epoch_order(len(self.data), cfg.seed, 0)
        self.data.make(self.order[:1], self.device)  # graph cache, as for the engine
        self.weight = loop.class_weights(self.data.labels, cfg.class_weight_multiplier).to(
            self.device
        )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=cfg.weight_decay)
        self.amp_dtype, use_scaler = loop.amp_settings(cfg.mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        loop.seed_everything(cfg.seed)  # same dropout masks as the engine's run
        self.rng = torch.get_rng_state()
        self.seconds = self.make_s = 0.0
        self.step_s: list[float] = []
        self.steps = 0
        self.first_loss: float | None = None

    def step(self, b: int) -> None:
        """Optimizer step ``b`` (batch ``b`` of the epoch order); the torch RNG is swapped in."""
        import torch
        import torch.nn.functional as F

        from streamguard_core.training.loop import forward_logits

        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        B = self.cfg.batch_size
        _sync(self.device)
        t0 = time.perf_counter()
        batch = self.data.make(self.order[b * B : (b + 1) * B], self.device)
        self.make_s += time.perf_counter() - t0
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            logits = forward_logits(self.kind, self.model, batch)
        loss = F.cross_entropy(logits.float(), batch["labels"], weight=self.weight)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        _sync(self.device)
        self.step_s.append(time.perf_counter() - t0)
        self.seconds += self.step_s[-1]
        self.steps += 1
        if self.first_loss is None:  # the engine's normalisation: sum(w_i * l_i) / n
            with torch.no_grad():
                per = F.cross_entropy(
                    logits.float(), batch["labels"], weight=self.weight, reduction="none"
                )
                self.first_loss = float(per.mean())
        self.rng = torch.get_rng_state()
        torch.set_rng_state(outer)


def _run(kind: str, data_dir: Path, run_dir: Path, cfg: Any) -> dict[str, Any]:
    """One engine fit() on a fresh model, a bare step interleaved after each engine step.

    Interleaving step by step keeps a machine whose load drifts (shared CI, other jobs) from
    favouring whichever path runs first; the time spent in the interleaved bare step (and the
    hook around it) is subtracted from fit's. Eval and checkpoint/metadata time are measured
    inside the same fit by wrapping the loop module's functions.
    """
    from streamguard_core.training import loop

    model, pad_id = _build(kind, data_dir, cfg.seed)
    state = loop.setup(kind, model, data_dir, run_dir, cfg, pad_id=pad_id)
    # Batches builds its graph cache for the whole split on first use: a one-off per run, not
    # per step, so it is paid (and reported) before the clock starts.
    t0 = time.perf_counter()
    state.train.make(loop.epoch_order(len(state.train), cfg.seed, 0)[:1], state.device)
    cache_s = time.perf_counter() - t0
    bare = _Bare(kind, data_dir, cfg, state.lr)
    losses: list[float] = []
    step_s: list[float] = []  # engine time per step: from the end of one hook to the next
    hook_s = last = 0.0
    on_step = state.collapse.on_step

    def interleave(loss: float, grad_norm: float | None, epoch: int, step: int) -> Any:
        nonlocal hook_s, last
        t0 = time.perf_counter()
        step_s.append(t0 - last)
        losses.append(loss)
        bare.step(step - 1)
        last = time.perf_counter()
        hook_s += last - t0
        return on_step(loss, grad_norm, epoch, step)

    state.collapse.on_step = interleave  # type: ignore[method-assign]
    groups = {
        "eval": ("predict", "tune_threshold", "classification_metrics"),
        "io": ("save_latest", "save_checkpoint", "write_metadata"),
    }
    loop.seed_everything(cfg.seed)  # same dropout masks as the bare run
    with _timed_calls(loop, groups) as spent:
        _sync(state.device)
        t0 = last = time.perf_counter()
        loop.fit(state)
        _sync(state.device)
        fit_s = time.perf_counter() - t0 - hook_s
    return {
        "fit_s": fit_s,
        "eval_s": spent["eval"],
        "io_s": spent["io"],
        "cache_s": cache_s,
        "steps": state.global_step,
        "first_loss": losses[0],
        "step_s": step_s,
        "bare": bare,
        "device": state.device,
        "amp_dtype": state.amp_dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_n": len(state.train),
    }


def _bench_kind(kind: str, data_dir: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    from streamguard_core.config import TrainConfig

    def cfg(steps: int) -> TrainConfig:
        return TrainConfig(
            epochs=1,
            batch_size=args.batch_size,
            max_steps_per_epoch=steps,
            checkpoint_every_steps=10**9,
            num_threads=args.threads,
        )

    _run(kind, data_dir, tmp / f"warm_{kind}", cfg(args.warmup_steps))  # both paths, own models
    run = _run(kind, data_dir, tmp / f"run_{kind}", cfg(args.steps))
    bare: _Bare = run["bare"]
    assert bare.steps == run["steps"] and bare.first_loss is not None

    samples = min(run["steps"] * args.batch_size, run["train_n"])
    train_s = run["fit_s"] - run["eval_s"] - run["io_s"]
    engine_sps, bare_sps = samples / train_s, samples / bare.seconds
    return {
        "engine_samples_per_s": round(engine_sps, 1),
        "engine_samples_per_s_including_eval_io": round(samples / run["fit_s"], 1),
        "bare_samples_per_s": round(bare_sps, 1),
        "ratio_to_bare": round(engine_sps / bare_sps, 3),
        # robust to bursts of load on a shared machine: median bare step / median engine step
        "ratio_to_bare_median_step": round(
            statistics.median(bare.step_s) / statistics.median(run["step_s"]), 3
        ),
        "engine_train_s": round(train_s, 3),
        "fit_s": round(run["fit_s"], 3),
        "bare_s": round(bare.seconds, 3),
        "eval_s": round(run["eval_s"], 3),
        "io_s": round(run["io_s"], 3),
        "bare_batch_build_s": round(bare.make_s, 3),
        "graph_cache_s": round(run["cache_s"], 3),
        "first_loss_match": math.isclose(
            run["first_loss"], bare.first_loss, rel_tol=1e-5, abs_tol=1e-6
        ),
        "first_loss": round(run["first_loss"], 6),
        "steps": run["steps"],
        "batch_size": args.batch_size,
        "samples": samples,
        "parameters": run["parameters"],
        "amp_dtype": str(run["amp_dtype"]) if run["amp_dtype"] else None,
        "_device": str(run["device"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--input",
        default=str(REPO.parent / "shared/data/devign_valid.jsonl.gz"),
        help="Devign JSONL(.gz); absent: the synthetic data set",
    )
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per path")
    ap.add_argument("--warmup-steps", type=int, default=3, help="untimed steps per path first")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    ap.add_argument("--max-seq-len", type=int, default=256, help="preprocessing token budget")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: transformer,gnn")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if unknown := set(kinds) - set(KINDS):
        ap.error(f"unknown kinds {sorted(unknown)}; choose from {list(KINDS)}")
    if min(args.steps, args.warmup_steps, args.batch_size) < 1:
        ap.error("--steps, --warmup-steps and --batch-size must be >= 1")
    args.threads = args.threads or os.cpu_count() or 1
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from streamguard_core.config import DataConfig, PreprocessConfig
    from streamguard_core.preprocess.run import preprocess

    t_all = time.perf_counter()
    torch.set_num_threads(args.threads)
    have_input = Path(args.input).is_file()
    data_cfg = (
        DataConfig(inputs=[args.input], split_strategy="random") if have_input else DataConfig()
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "data"
        t0 = time.perf_counter()
        meta = preprocess(
            data_cfg,
            PreprocessConfig(max_seq_len=args.max_seq_len, vocab_size=4000),
            data_dir,
            show_progress=False,
        )
        preprocess_s = time.perf_counter() - t0
        for kind in kinds:
            results[kind] = _bench_kind(kind, data_dir, tmp, args)
    device = next((r.pop("_device") for r in results.values()), "cpu")
    for r in results.values():
        r.pop("_device", None)
    data = (
        f"{os.path.basename(args.input)} (random split)"
        if have_input
        else f"synthetic ({args.input} not found)"
    )
    print(
        json.dumps(
            {
                "bench": "train",
                "data": data,
                "split_counts": meta["counts"].get("kept_per_split"),
                "max_seq_len": args.max_seq_len,
                "preprocess_s": round(preprocess_s, 2),
                "kinds": results,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "device": device,
                "wall_s": round(time.perf_counter() - t_all, 1),
                "targets": {"ratio_to_bare": 0.9},
            }
        )
    )


if __name__ == "__main__":
    main()
