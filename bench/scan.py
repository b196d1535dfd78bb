"""Scoring cost per function of every model kind, torch vs ONNX vs a bare forward, as one JSON line.

For each model (the production model of ``--registry`` and its bases, or ``--model-dir``s):

- ``torch_ms``: ``load_detector(dir, use_onnx=False).predict_proba(funcs)``, the whole scoring
  path (tree-sitter, tokens/graphs, collation, forward), per function.
- ``onnx_ms``: the same after ``streamguard export onnx`` on a temporary copy of the directory
  (the registry is never written to): ``load_detector(copy, use_onnx=True)``. ``null`` for a
  baseline (it needs no export).
- ``bare_torch_ms`` / ``bare_onnx_ms``: the model's forward only, on batches collated before
  the clock starts (same functions, same batch size): the floor a scoring path can reach.
  Baseline: the classifier on the already-vectorised matrix. Fusion: the sum over its bases
  plus the combiner on their precomputed logits.
- ``explain_ms``: ``streamguard_core.explain.load_explainer(dir).line_scores(funcs)`` per
  function, on ``--explain-n`` functions, reported apart (``null`` with the reason when the
  explainer is missing or fails).

Median of ``--repeats`` runs (``min_ms``: the fastest run of each), backends interleaved run by
run so load that drifts on a shared machine hits them alike; the load average before and after
is in the output. Functions: the
first ``-n`` of Devign valid (the embedded synthetic functions when the file is absent). Models:
``--model-dir`` (repeatable; with two or more and no fusion among them, a fusion over them with
an untrained combiner is assembled as the production stand-in), else the production model of
``--registry`` (default ``runs/full/registry``) and its ``bases/``, else tiny models trained
here on the embedded synthetic data (said so in ``models_source``); a kind missing from the
given models (e.g. transformer) is trained tiny too, and said so in ``notes``. The issue's
target: <= 5 ms per function for the production model on this CPU (``production.met``; the
default backend, ONNX when exported).

    python bench/scan.py [--registry runs/full/registry] [--model-dir DIR ...] [-n 256]
        [--batch-size 64] [--repeats 3] [--threads 1] [--explain-n 16]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_MS = 5.0
KINDS = ("baseline", "gnn", "transformer", "fusion")


def _ms(seconds: float | None, n: int) -> float | None:
    return None if seconds is None else round(1000 * seconds / n, 3)


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _functions(path: Path, n: int) -> tuple[list[str], str]:
    from streamguard_core.data.loaders import iter_records

    if path.exists():
        funcs = (r.func for r in iter_records(path) if hasattr(r, "func"))
        return list(itertools.islice(funcs, n)), path.name
    from streamguard_core.data.synthetic import generate_synthetic

    funcs = [r.func for r in generate_synthetic(pairs_per_cwe=max(1, n // 26 + 1), seed=1)][:n]
    return funcs, f"embedded synthetic ({path} not found)"


# --------------------------------------------------------------------------- models


def _train_tiny(kinds: set[str], root: Path) -> dict[str, Path]:
    """Small models of ``kinds`` trained on the embedded synthetic data (the production GNN's
    shape: gcn, hidden 64, 3 layers; the default tiny transformer), a few steps each."""
    from streamguard_core.config import (
        DataConfig,
        FusionConfig,
        GNNConfig,
        PreprocessConfig,
        TrainConfig,
        TrainJobSpec,
        TransformerConfig,
    )
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.models.baseline import BaselineDetector
    from streamguard_core.models.fusion import FusionNet, save_fusion
    from streamguard_core.preprocess.run import preprocess
    from streamguard_core.training.job import run_job

    out: dict[str, Path] = {}
    need_data = kinds & {"gnn", "transformer", "fusion"}
    data = root / "data"
    if need_data:
        preprocess(DataConfig(synthetic_pairs_per_cwe=10), PreprocessConfig(workers=1), data,
                   show_progress=False)  # fmt: skip
    models = {"gnn": GNNConfig(arch="gcn", hidden_dim=64, num_layers=3),
              "transformer": TransformerConfig()}  # fmt: skip
    for kind in ("gnn", "transformer"):
        if kind in kinds or (kind == "gnn" and "fusion" in kinds):
            spec = TrainJobSpec(
                model=models[kind], seed=42, data_dir=str(data), run_dir=str(root / kind),
                train=TrainConfig(epochs=1, max_steps_per_epoch=20, batch_size=16, num_threads=1),
            )  # fmt: skip
            status = run_job(spec)
            if status.status != "completed":
                raise RuntimeError(f"tiny {kind}: {status.error}")
            out[kind] = root / kind / "model"
    if kinds & {"baseline", "fusion"}:
        records = generate_synthetic(pairs_per_cwe=20, seed=3)
        detector = BaselineDetector()
        detector.fit([r.func for r in records], [r.label for r in records])
        out["baseline"] = detector.save(root / "baseline")
    if "fusion" in kinds:  # an untrained combiner: the same cost as a trained one
        out["fusion"] = save_fusion(FusionNet(2, 16), FusionConfig(), root / "fusion",
                                    {"threshold": 0.5},
                                    {"gnn": out["gnn"], "baseline": out["baseline"]})  # fmt: skip
    return {k: v for k, v in out.items() if k in kinds}


def _assemble_fusion(bases: dict[str, Path], root: Path) -> Path:
    """A fusion directory over ``bases`` with an untrained combiner: it scores like a trained
    one (the combiner is a few hundred flops), so it stands in for the production fusion."""
    from streamguard_core.config import FusionConfig
    from streamguard_core.models.fusion import FusionNet, save_fusion

    named = {f"{i}_{p.parent.parent.name or p.name}": p for i, p in enumerate(bases.values())}
    return save_fusion(FusionNet(len(named), 16), FusionConfig(), root / "fusion",
                       {"threshold": 0.5}, named)  # fmt: skip


def _registry_models(registry: Path) -> tuple[Path, dict[str, Path]]:
    """The production model directory and every model to bench: it and its bases."""
    from streamguard_core.pipeline.registry import ModelRegistry

    production = ModelRegistry(registry).production()
    if production is None:
        raise LookupError(f"{registry}: no production model")
    prod = Path(production["model_dir"])
    models = {f"production ({_kind(prod)})": prod}
    if (prod / "bases").is_dir():
        for base in sorted((prod / "bases").iterdir()):
            models[f"base {base.name} ({_kind(base)})"] = base
    return prod, models


def _kind(model_dir: Path) -> str:
    return str(json.loads((model_dir / "model_card.json").read_text())["kind"])


# --------------------------------------------------------------------------- bare forwards


def _bare(detector: Any, funcs: list[str], batch_size: int) -> Callable[[], Any] | None:
    """The detector's forward on inputs prepared now (no preprocessing inside the call)."""
    import numpy as np
    import torch

    from streamguard_core.models.fusion import FusionDetector, predict_fusion, to_logits
    from streamguard_core.models.neural import function_batches

    if isinstance(detector, FusionDetector):
        parts = [_bare(base, funcs, batch_size) for base in detector.bases]
        z = to_logits(detector.base_probabilities(funcs))
        if any(p is None for p in parts):
            return None
        return lambda: ([p() for p in parts if p is not None], predict_fusion(detector.net, z))
    if detector.kind == "baseline":
        if detector.uses_metrics:
            from streamguard_core.models.code_metrics import metrics_matrix

            matrix, trees = metrics_matrix(funcs), detector.trees
            return lambda: trees.predict_proba(matrix)
        vectorizer, classifier = detector._text_model()
        features = vectorizer.transform(funcs)
        return lambda: classifier.predict_proba(features)
    data = function_batches(funcs, None, detector.dir, detector.preprocess, detector.kind,
                            detector.pad_id)  # fmt: skip
    spans = [
        np.arange(s, min(s + batch_size, len(funcs))) for s in range(0, len(funcs), batch_size)
    ]
    batches = [data.make(idx, torch.device("cpu")) for idx in spans]
    if detector.backend == "onnxruntime":
        feeds = [
            (detector.feeds(b, len(idx)), len(idx)) for b, idx in zip(batches, spans, strict=True)
        ]
        return lambda: [detector.forward(f, n) for f, n in feeds]
    from streamguard_core.models.adapters import adapter_for

    adapter = adapter_for(detector.kind)

    def forward() -> None:
        with torch.no_grad():
            for batch in batches:
                torch.softmax(adapter.forward(detector.model, batch).float(), -1)

    return forward


def _predict(detector: Any, funcs: list[str], batch_size: int) -> Any:
    if hasattr(detector, "pad_id"):  # neural detectors take a batch size
        return detector.predict_proba(funcs, batch_size=batch_size)
    return detector.predict_proba(funcs)


def _explain_seconds(model_dir: Path, funcs: list[str]) -> tuple[float | None, str | None]:
    try:
        from streamguard_core.explain import load_explainer
    except ImportError as exc:
        return None, f"streamguard_core.explain.load_explainer missing ({exc})"
    try:
        explainer = load_explainer(model_dir)
        explainer.line_scores(funcs[:1])  # warm-up (lazy loads)
        return _timed(lambda: explainer.line_scores(funcs)), None
    except Exception as exc:  # report, do not abort the whole bench
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"


def bench_model(model_dir: Path, funcs: list[str], args: argparse.Namespace, tmp: Path
                ) -> dict[str, Any]:  # fmt: skip
    """Every figure of one model directory."""
    import numpy as np

    from streamguard_core.export.onnx import export_model_dir
    from streamguard_core.models.registry import load_detector

    n, kind = len(funcs), _kind(model_dir)
    row: dict[str, Any] = {"model_dir": str(model_dir), "kind": kind}
    t0 = time.perf_counter()
    torch_det = load_detector(model_dir, use_onnx=False)
    row["torch_load_s"] = round(time.perf_counter() - t0, 3)
    onnx_det = None
    if kind != "baseline":
        copy = tmp / str(len(list(tmp.iterdir()))) / model_dir.name
        shutil.copytree(model_dir, copy)
        outcomes = export_model_dir(copy)
        exported = [o for o in outcomes if o.info is not None]
        row["onnx_export"] = [{"model": Path(o.model_dir).name, "export_s": o.info.export_seconds,
                               "parity_max_abs_diff": o.info.parity.max_abs_diff}
                              for o in exported if o.info is not None]  # fmt: skip
        if exported:
            t0 = time.perf_counter()
            onnx_det = load_detector(copy, use_onnx=True)
            row["onnx_load_s"] = round(time.perf_counter() - t0, 3)
    variants: dict[str, Callable[[], Any]] = {
        "torch": lambda: _predict(torch_det, funcs, args.batch_size)
    }
    bare_torch = _bare(torch_det, funcs, args.batch_size)
    if bare_torch is not None:
        variants["bare_torch"] = bare_torch
    if onnx_det is not None:
        variants["onnx"] = lambda: _predict(onnx_det, funcs, args.batch_size)
        bare_onnx = _bare(onnx_det, funcs, args.batch_size)
        if bare_onnx is not None:
            variants["bare_onnx"] = bare_onnx
        reference = _predict(torch_det, funcs, args.batch_size)
        row["onnx_vs_torch_max_abs_diff"] = float(
            np.max(np.abs(_predict(onnx_det, funcs, args.batch_size) - reference))
        )
    for fn in variants.values():  # warm-up: first-call allocations, lazy imports
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(_timed(fn))
    for name in ("torch", "onnx", "bare_torch", "bare_onnx"):
        row[f"{name}_ms"] = _ms(statistics.median(times[name]), n) if name in times else None
    # the fastest run: the least disturbed by other jobs on a shared machine
    row["min_ms"] = {name: _ms(min(runs), n) for name, runs in times.items()}
    if row["torch_ms"] is not None and row["bare_torch_ms"] is not None:
        row["preprocess_ms"] = round(row["torch_ms"] - row["bare_torch_ms"], 3)
    explain_n = min(args.explain_n, n)
    if explain_n:
        seconds, why = _explain_seconds(model_dir, funcs[:explain_n])
        row["explain_ms"] = _ms(seconds, explain_n)
        row["explain_functions"] = explain_n
        if why:
            row["explain_note"] = why
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--input", default=str(REPO.parent / "shared/data/devign_valid.jsonl.gz"))
    ap.add_argument("-n", type=int, default=256, help="functions scored")
    ap.add_argument("--batch-size", type=int, default=64, help="scan's default batch size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    ap.add_argument("--explain-n", type=int, default=16, help="functions explained (0: skip)")
    ap.add_argument("--model-dir", action="append", default=[], help="repeatable")
    ap.add_argument("--registry", default=str(REPO / "runs/full/registry"))
    ap.add_argument(
        "--no-tiny", action="store_true",
        help="do not train tiny models for the kinds the given models lack",
    )  # fmt: skip
    ap.add_argument(
        "--no-assemble", action="store_true",
        help="with several --model-dir and no fusion among them, do not assemble one",
    )  # fmt: skip
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    funcs, source = _functions(Path(args.input), args.n)
    production: Path | None = None
    models: dict[str, Path] = {}
    notes: list[str] = []
    if args.model_dir:
        models = {f"{d} ({_kind(Path(d))})": Path(d) for d in args.model_dir}
        models_source = "--model-dir"
        production = next((p for p in models.values() if _kind(p) == "fusion"), None)
    else:
        try:
            production, models = _registry_models(Path(args.registry))
            models_source = f"registry {args.registry} (production + its bases)"
        except (LookupError, FileNotFoundError, OSError) as exc:
            notes.append(f"no production model ({exc}); tiny models trained on synthetic data")
            models_source = "tiny models trained here on the embedded synthetic data"

    with tempfile.TemporaryDirectory(prefix="bench_scan_") as tmp_dir:
        tmp = Path(tmp_dir)
        if production is None and len(models) >= 2 and not args.no_assemble:
            production = _assemble_fusion(models, tmp)
            models["assembled fusion (fusion)"] = production
            notes.append(
                "production stand-in: a fusion over the --model-dir models with an untrained "
                "combiner (its cost is the bases' plus a negligible MLP)"
            )
        elif production is None and models:
            production = next(iter(models.values()))
        missing = set(KINDS) - {_kind(p) for p in models.values()}
        if missing and not args.no_tiny:
            tiny = _train_tiny(missing, tmp / "tiny")
            for kind, path in tiny.items():
                models[f"tiny {kind}"] = path
            if models_source.startswith("registry") or args.model_dir:
                notes.append(f"kinds not in the given models, trained tiny on synthetic data: "
                             f"{sorted(tiny)}")  # fmt: skip
            if production is None:
                production = tiny.get("fusion")
        bench_tmp = tmp / "onnx"
        bench_tmp.mkdir()
        rows = {name: bench_model(path, funcs, args, bench_tmp) for name, path in models.items()}

    prod_row = next((r for r in rows.values() if Path(r["model_dir"]) == production), None)
    prod: dict[str, Any] | None = None
    if prod_row is not None:
        backend = "onnx" if prod_row.get("onnx_ms") is not None else "torch"
        ms = prod_row[f"{backend}_ms"]
        prod = {"model_dir": prod_row["model_dir"], "kind": prod_row["kind"],
                "backend": backend, "ms_per_function": ms, "torch_ms": prod_row["torch_ms"],
                "min_ms": prod_row["min_ms"].get(backend), "target_ms": TARGET_MS,
                "met": ms is not None and ms <= TARGET_MS}  # fmt: skip
    print(
        json.dumps(
            {
                "bench": "scan",
                "input": source,
                "functions": len(funcs),
                "batch_size": args.batch_size,
                "repeats": args.repeats,
                "threads": args.threads,
                "cpu": {
                    "cores": os.cpu_count(),
                    "machine": platform.machine(),
                    "processor": platform.processor() or None,
                },
                "load_average_start": [round(x, 2) for x in load_start],
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
                "models_source": models_source,
                "notes": notes,
                "target_ms": TARGET_MS,
                "production": prod,
                "models": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
