"""The quick pipeline through Prefect vs the same stages called directly, as one JSON line.

Prefect: ``flows.pipeline.streamguard_pipeline`` with a preset (default ``quick``) against the
embedded ephemeral Prefect server, started and warmed up first (a flow with one task that logs a
line: the engines and the client's event and log workers start once per process) so its start-up
is reported separately (``server_start_s``) and excluded from the ratio. Every task, artifact,
event, log line shipped to the API and result write of the real flow is included (the console
handler alone is quieted: ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=WARNING``).

Direct: the same stages through the core, without Prefect: ``preprocess`` -> ``run_preflight``
-> ``LocalBackend().run(spec)`` for every job spec of ``plan.jobs(...)`` (the same specs and the
same process per job as the flow's tasks) -> ``aggregate_all`` + ``write_report`` ->
``compare_runs``.

An untimed direct run of the ``quick`` preset first loads torch, transformers, torch_geometric
and tree-sitter, so neither timed path pays for first imports. Then --repeats rounds, the order
alternating (Prefect then direct, direct then Prefect, ...), each with fresh output roots, so no
cache is hit and load that drifts on a shared machine hits both alike; ``ratio`` compares the
medians (target <= 1.15) and ``overhead_s`` is their difference in seconds. ``total_wall_s``
is the slowest Prefect run plus the server start (target <= 600 s here).

``prefect_outside_core_s`` (per round) is the Prefect run's seconds outside the core calls its
tasks make (:data:`CORE_CALLS`, timed in the run): Prefect's own time on the flow's thread
(flow and task engines, API calls, artifacts on the critical path, the heartbeat thread's stop)
plus the flow's own glue. ``overhead_s`` minus it is the core running slower beside Prefect's
threads and its server; on a loaded machine this split is steadier than the ratio.
``prefect_core_call_s`` (medians) splits the Prefect run's core time by call, beside
``direct_stage_s`` (``aggregate`` there is ``aggregate_all`` + ``write_report``).

The direct side does only the work: no artifacts, events, logs, task-run records, cache keys
or result files. What the flow does for its users beyond that is the overhead being measured.

``direct_stage_s`` splits the direct run into its stages (median over rounds), so
``--fusion K`` shows what the OOF and fusion stages cost (``oof_fusion_s``).

    python bench/pipeline.py [--preset quick] [--repeats 2] [--fusion 3]
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
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from streamguard_core.config import PipelineConfig


STAGES: dict[str, list[float]] = {}


def _stage(name: str, t0: float) -> float:
    """Record a direct stage's seconds since ``t0`` under ``name``; returns now."""
    now = time.perf_counter()
    STAGES.setdefault(name, []).append(now - t0)
    return now


def direct(config: PipelineConfig, root: Path) -> float:
    """The pipeline's stages through the core only; returns seconds (each stage's seconds go
    to ``STAGES``: preprocess, preflight, base, oof, fusion, aggregate, compare)."""
    from streamguard_core.backends.local import LocalBackend
    from streamguard_core.evaluation.compare import compare_runs
    from streamguard_core.pipeline.aggregate import aggregate_all
    from streamguard_core.pipeline.report import write_report
    from streamguard_core.preprocess.run import preprocess
    from streamguard_core.training.preflight import run_preflight

    start = t0 = time.perf_counter()
    data_dir = root / "data"
    preprocess(config.data, config.preprocessing, data_dir, show_progress=False)
    t0 = _stage("preprocess", t0)
    if config.run_preflight:
        report = run_preflight(data_dir, config.plan, output=root / "preflight_report.json")
        if not report["go"]:
            raise SystemExit("preflight no-go in the direct path")
    t0 = _stage("preflight", t0)
    backend, plan = LocalBackend(), config.plan
    for spec in plan.jobs(data_dir, root):
        backend.run(spec)
    t0 = _stage("base", t0)
    if plan.fusion:
        for spec in plan.oof_jobs(data_dir, root):
            backend.run(spec)
        t0 = _stage("oof", t0)
        for spec in plan.fusion_jobs(data_dir, root):
            backend.run(spec)
        t0 = _stage("fusion", t0)
    write_report(aggregate_all(root, plan, config.criteria), root)
    t0 = _stage("aggregate", t0)
    compare_runs(
        root, plan.all_names, list(plan.seeds), target_precision=plan.train.target_precision
    )
    _stage("compare", t0)
    return time.perf_counter() - start


# the core calls the flow's tasks make, as (module the task looks the name up in, name): timed
# inside the Prefect run, so that Prefect's own seconds on the flow's thread can be told apart
# from the core running slower beside Prefect's threads and server
CORE_CALLS = [
    ("tasks.data", "preprocess"),
    ("streamguard_core.training.preflight", "run_preflight"),
    ("streamguard_core.backends.local", "LocalBackend.run"),
    ("streamguard_core.pipeline.aggregate", "aggregate_all"),
    ("streamguard_core.pipeline.report", "write_report"),
    ("tasks.evaluation", "compare_runs"),
]
IN_CORE: dict[str, float] = {}
PREFECT_CORE: dict[str, list[float]] = {}  # seconds per core call, one entry per Prefect run


def time_core_calls() -> None:
    """Wrap every :data:`CORE_CALLS` function so that its seconds add up in ``IN_CORE``."""
    import functools
    import importlib

    for module_name, name in CORE_CALLS:
        owner: Any = importlib.import_module(module_name)
        *path, attr = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, attr, None)
        if original is None:
            raise SystemExit(f"{module_name}.{name} is gone: update CORE_CALLS in {__file__}")

        @functools.wraps(original)
        def timed(*args: Any, _f: Any = original, _n: str = name, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                IN_CORE[_n] = IN_CORE.get(_n, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)


def through_prefect(config: PipelineConfig, root: Path) -> tuple[float, float]:
    """The real flow; returns (seconds, of which inside the core calls) (the server is already
    up). A run that ends Failed only because its success criteria failed still did all the
    work, so it counts."""
    from flows.pipeline import streamguard_pipeline

    IN_CORE.clear()
    t0 = time.perf_counter()
    state = streamguard_pipeline(config.model_copy(update={"output_root": str(root)}),
                                 return_state=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    if not state.is_completed() and "success criteria failed" not in (state.message or ""):
        raise SystemExit(f"the pipeline flow ended {state.name}: {state.message}")
    expected = {n for _, n in CORE_CALLS} - (set() if config.run_preflight else {"run_preflight"})
    if missing := expected - set(IN_CORE):
        raise SystemExit(f"the flow no longer reaches {sorted(missing)}: update CORE_CALLS")
    for name, spent in IN_CORE.items():
        PREFECT_CORE.setdefault(name, []).append(spent)
    return seconds, sum(IN_CORE.values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--fusion", type=int, default=None, metavar="K",
        help="turn the preset's fusion stage on with K folds (OOF jobs + one fusion per seed)",
    )  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect_home"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # a quiet console, but the run's INFO logs still go to the API as they do for users
    # (PREFECT_LOGGING_LEVEL=WARNING would drop them before they are shipped)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from prefect import flow, get_run_logger, task

    from flows.presets import load_preset

    config = load_preset(args.preset)
    if args.fusion:
        plan = config.plan.model_copy(update={"fusion": True, "n_folds": args.fusion})
        config = config.model_copy(update={"plan": plan})

    @task(name="bench-warmup-task")
    def warmup_task() -> None:
        get_run_logger().info("warm")

    @flow(name="bench-warmup")
    def warmup() -> None:
        warmup_task()  # the first task run starts the client's events and log workers

    t0 = time.perf_counter()
    warmup()  # starts the ephemeral server and loads the flow and task engines
    server_start_s = time.perf_counter() - t0
    # one untimed direct run of the quick preset first, so that neither timed path pays for the
    # first imports of torch, transformers, torch_geometric and tree-sitter
    t0 = time.perf_counter()
    direct(load_preset("quick"), work / "warmup")
    warmup_s = time.perf_counter() - t0
    STAGES.clear()
    time_core_calls()
    prefect_s: list[float] = []
    in_core_s: list[float] = []
    direct_s: list[float] = []
    for i in range(args.repeats):  # the order alternates, so drifting load hits both alike
        if i % 2:
            direct_s.append(direct(config, work / f"direct_{i}"))
        seconds, in_core = through_prefect(config, work / f"prefect_{i}")
        prefect_s.append(seconds)
        in_core_s.append(in_core)
        if not i % 2:
            direct_s.append(direct(config, work / f"direct_{i}"))
    ratio = statistics.median(prefect_s) / statistics.median(direct_s)
    print(
        json.dumps(
            {
                "bench": "pipeline",
                "preset": args.preset,
                "runs": len(config.plan.models) * len(config.plan.seeds),
                "fusion": config.plan.fusion,
                "oof_runs": len(config.plan.oof_jobs("d", "r")),
                "direct_stage_s": {k: round(statistics.median(v), 2) for k, v in STAGES.items()},
                "oof_fusion_s": round(
                    statistics.median(STAGES.get("oof", [0.0]))
                    + statistics.median(STAGES.get("fusion", [0.0])),
                    2,
                ),
                "server_start_s": round(server_start_s, 2),
                "warmup_s": round(warmup_s, 2),
                "per_round_ratio": [
                    round(p / d, 3) for p, d in zip(prefect_s, direct_s, strict=True)
                ],
                "prefect_s": [round(s, 2) for s in prefect_s],
                "direct_s": [round(s, 2) for s in direct_s],
                "ratio": round(ratio, 3),
                "overhead_s": round(statistics.median(prefect_s) - statistics.median(direct_s), 2),
                "prefect_outside_core_s": [
                    round(p - c, 2) for p, c in zip(prefect_s, in_core_s, strict=True)
                ],
                "prefect_core_call_s": {
                    k: round(statistics.median(v), 2) for k, v in PREFECT_CORE.items()
                },
                "target_ratio": 1.15,
                "total_wall_s": round(server_start_s + max(prefect_s), 2),
                "target_total_s": 600,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
