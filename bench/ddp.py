"""Data-parallel training (DDP, gloo on CPU) vs one process, printed as one JSON line.

Baseline (bare): the same GNN job trained by one process, ``python -m
streamguard_core.training.job SPEC`` (a fresh interpreter, as the local backend's and
SageMaker's processes are). Measured: the same job with ``train.nproc_per_node = 2`` through
``run_job``, which starts ``torchrun --standalone --nproc_per_node 2`` (three fresh
interpreters: the agent and two workers). Same seed, same global batch, dropout 0, the same
cores (one process gets --threads torch threads; each of the two gets half).

    wall_s            the job from the command to its run_status.json (startup included)
    train_s           the epochs themselves (training_metadata.json's per-epoch seconds)
    max_abs_weight_diff   largest difference of one final weight (checkpoints/latest), 2 vs 1
    rel_weight_diff       ||w2 - w1|| / ||w1|| over all the final weights
    max_abs_valid_prob_diff                     validation probabilities, 2 vs 1

On a CPU the figure that matters is that the weights agree to float rounding; the speed of two
processes against one with as many threads depends on the model and the load (a tiny GNN's step
is mostly Python, and the all-reduce adds a round trip per step; on a machine shared with other
jobs torch's spinning threads slow the two-thread process badly). DDP pays off with one process
per GPU.

Data: the synthetic generator (--pairs per CWE template), preprocessed in a temp dir. Defaults
(2 epochs, batch 32, hidden 64) take about a minute on an idle 2-core machine.

    python bench/ddp.py [--pairs 20] [--epochs 2] [--batch-size 32] [--hidden-dim 64]
        [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from streamguard_core.training.paths import RunPaths


def _train_seconds(paths: RunPaths) -> float:
    meta = json.loads(paths.metadata.read_text())
    return round(sum(row["seconds"] for row in meta["history"]), 2)


def _weights(paths: RunPaths) -> dict[str, Any]:
    from streamguard_core.training.checkpoint import load_checkpoint

    return dict(load_checkpoint(paths.latest)["model"])


def _valid_probs(paths: RunPaths) -> list[float]:
    from streamguard_core.io import read_jsonl

    return [float(r["probability"]) for r in read_jsonl(paths.valid_predictions)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20, help="synthetic pairs per CWE template")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32, help="the global batch")
    ap.add_argument("--hidden-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in all (0: cores)")
    args = ap.parse_args()

    from streamguard_core.config import (
        DataConfig,
        GNNConfig,
        PreprocessConfig,
        TrainConfig,
        TrainJobSpec,
    )
    from streamguard_core.preprocess.run import preprocess
    from streamguard_core.training.job import run_job
    from streamguard_core.training.paths import RunPaths

    threads = args.threads or os.cpu_count() or 1
    # the one-process job and torchrun's workers read it (the launcher keeps a set value)
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads // 2))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        meta = preprocess(DataConfig(synthetic_pairs_per_cwe=args.pairs),
                          PreprocessConfig(workers=1), data, show_progress=False)  # fmt: skip

        def spec(nproc: int) -> TrainJobSpec:
            return TrainJobSpec(
                model=GNNConfig(hidden_dim=args.hidden_dim, dropout=0.0),
                train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                  early_stopping_patience=args.epochs, nproc_per_node=nproc,
                                  num_threads=max(1, threads // nproc)),
                seed=7, data_dir=str(data), run_dir=str(Path(tmp) / f"nproc_{nproc}"),
            )  # fmt: skip

        one, two = spec(1), spec(2)
        spec_file = Path(tmp) / "one.json"
        spec_file.write_text(one.model_dump_json())
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "streamguard_core.training.job", str(spec_file),
                        "--device", "cpu"], check=True, capture_output=True)  # fmt: skip
        one_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        status = run_job(two, device="cpu")
        two_wall = time.perf_counter() - t0
        if status.status != "completed":
            raise SystemExit(f"the 2-process run {status.status}: {status.error}")

        one_paths, two_paths = RunPaths(one.run_dir), RunPaths(two.run_dir)
        w1, w2 = _weights(one_paths), _weights(two_paths)
        abs_diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
        diff_norm = sum(float((w1[k] - w2[k]).double().pow(2).sum()) for k in w1) ** 0.5
        rel_diff = diff_norm / sum(float(w1[k].double().pow(2).sum()) for k in w1) ** 0.5
        p1, p2 = _valid_probs(one_paths), _valid_probs(two_paths)
        m1, m2 = (json.loads(p.metrics.read_text()) for p in (one_paths, two_paths))
        print(json.dumps({
            "bench": "ddp",
            "kind": "gnn",
            "backend": "gloo (CPU)",
            "train_examples": meta["counts"]["kept_per_split"]["train"],
            "epochs": args.epochs,
            "global_batch": args.batch_size,
            "threads_total": threads,
            "one_process_wall_s": round(one_wall, 2),
            "two_process_wall_s": round(two_wall, 2),
            "ratio_two_to_one_wall": round(two_wall / one_wall, 3),
            "one_process_train_s": _train_seconds(one_paths),
            "two_process_train_s": _train_seconds(two_paths),
            "max_abs_weight_diff": abs_diff,
            "rel_weight_diff": rel_diff,
            "max_abs_valid_prob_diff": max(abs(a - b) for a, b in zip(p1, p2, strict=True)),
            "valid_f1_one": m1["valid"]["f1"],
            "valid_f1_two": m2["valid"]["f1"],
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
