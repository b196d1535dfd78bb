"""The quick pipeline through Prefect vs the same stages called directly, as one JSON line.

Prefect: ``flows.pipeline.streamguard_pipeline`` with a preset (default ``quick``) against the
embedded ephemeral Prefect server, started and warmed up first (a no-op flow) so its start-up
is reported separately (``server_start_s``) and excluded from the ratio. Every task, artifact,
event and result write of the real flow is included.

Direct: the same stages through the core, without Prefect: ``preprocess`` -> ``run_preflight``
-> ``LocalBackend().run(spec)`` for every job spec of ``plan.jobs(...)`` (the same specs and the
same process per job as the flow's tasks) -> ``aggregate_all`` + ``write_report``.

An untimed direct run of the ``quick`` preset first loads torch, transformers, torch_geometric
and tree-sitter, so neither timed path pays for first imports. Then --repeats rounds, the order
alternating (Prefect then direct, direct then Prefect, ...), each with fresh output roots, so no
cache is hit and load that drifts on a shared machine hits both alike; ``ratio`` compares the
medians (target <= 1.15). ``total_wall_s`` is the slowest Prefect run plus the server start
(target <= 600 s here).

    python bench/pipeline.py [--preset quick] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from streamguard_core.config import PipelineConfig


def direct(config: PipelineConfig, root: Path) -> float:
    """The pipeline's stages through the core only; returns seconds."""
    from streamguard_core.backends.local import LocalBackend
    from streamguard_core.pipeline.aggregate import aggregate_all
    from streamguard_core.pipeline.report import write_report
    from streamguard_core.preprocess.run import preprocess
    from streamguard_core.training.preflight import run_preflight

    t0 = time.perf_counter()
    data_dir = root / "data"
    preprocess(config.data, config.preprocessing, data_dir, show_progress=False)
    if config.run_preflight:
        report = run_preflight(data_dir, config.plan, output=root / "preflight_report.json")
        if not report["go"]:
            raise SystemExit("preflight no-go in the direct path")
    backend = LocalBackend()
    for spec in config.plan.jobs(data_dir, root):
        backend.run(spec)
    write_report(aggregate_all(root, config.plan, config.criteria), root)
    return time.perf_counter() - t0


def through_prefect(config: PipelineConfig, root: Path) -> float:
    """The real flow; returns seconds (the server is already up). A run that ends Failed only
    because its success criteria failed still did all the work, so it counts."""
    from flows.pipeline import streamguard_pipeline

    t0 = time.perf_counter()
    state = streamguard_pipeline(config.model_copy(update={"output_root": str(root)}),
                                 return_state=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    if not state.is_completed() and "success criteria failed" not in (state.message or ""):
        raise SystemExit(f"the pipeline flow ended {state.name}: {state.message}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect_home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect import flow

    from flows.presets import load_preset

    config = load_preset(args.preset)

    @flow(name="bench-warmup")
    def warmup() -> None:
        return None

    t0 = time.perf_counter()
    warmup()  # starts the ephemeral server and loads the engine
    server_start_s = time.perf_counter() - t0
    # one untimed direct run of the quick preset first, so that neither timed path pays for the
    # first imports of torch, transformers, torch_geometric and tree-sitter
    t0 = time.perf_counter()
    direct(load_preset("quick"), work / "warmup")
    warmup_s = time.perf_counter() - t0
    prefect_s: list[float] = []
    direct_s: list[float] = []
    for i in range(args.repeats):  # the order alternates, so drifting load hits both alike
        if i % 2:
            direct_s.append(direct(config, work / f"direct_{i}"))
            prefect_s.append(through_prefect(config, work / f"prefect_{i}"))
        else:
            prefect_s.append(through_prefect(config, work / f"prefect_{i}"))
            direct_s.append(direct(config, work / f"direct_{i}"))
    ratio = statistics.median(prefect_s) / statistics.median(direct_s)
    print(
        json.dumps(
            {
                "bench": "pipeline",
                "preset": args.preset,
                "runs": len(config.plan.models) * len(config.plan.seeds),
                "server_start_s": round(server_start_s, 2),
                "warmup_s": round(warmup_s, 2),
                "per_round_ratio": [
                    round(p / d, 3) for p, d in zip(prefect_s, direct_s, strict=True)
                ],
                "prefect_s": [round(s, 2) for s in prefect_s],
                "direct_s": [round(s, 2) for s in direct_s],
                "ratio": round(ratio, 3),
                "target_ratio": 1.15,
                "total_wall_s": round(server_start_s + max(prefect_s), 2),
                "target_total_s": 600,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
