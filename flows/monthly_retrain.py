"""``monthly-retrain``: refresh the data, run the pipeline, promote the new best model if better.

The new best model (best seed of the best model) and the current production model are scored
on the *same* validation data (the refreshed data set's valid split); the file-based registry
(``registry_dir``: versions, ``production.json`` pointer, ``history.jsonl``) moves its
production pointer only when the candidate's F1 beats production's by ``min_improvement``.

With ``collect`` set, the data is refreshed through the collectors too: the ``collect`` flow
runs into ``<root>/collected`` (when every online source fails, its ``offline_fallback`` file
source is collected instead), then the ``phase2`` flow weights the collected functions by the
new phase-1 models, retrains on the merged data and compares the phases; the candidate is
then the phase-2 best model (phase 1's when phase 2 completed no model).

With ``config.run_id`` the retraining run writes into ``<root>/<UTC date>/runs/<run_id>/`` (and
its collection and phase 2 inside it), so several retraining runs of one day can share one
output root and one registry: promotions into the registry are serialised compare-and-sets
(``ModelRegistry.promote_if_better``), so the best candidate ends in production whatever the
order they finish in.

    python -m flows.monthly_retrain --preset quick
    python -m flows.monthly_retrain --preset quick --collect file
    python -m flows.monthly_retrain --preset quick --run-id auto
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run as current_flow_run

from flows.collect import collect as collect_flow
from flows.phase2 import phase2 as phase2_flow
from flows.pipeline import streamguard_pipeline
from flows.train_production import stop_jobs_under
from streamguard_core.config import CollectConfig, Phase2Config, PipelineConfig
from streamguard_core.pipeline.rundir import resolve_run_dir, resolve_run_id
from tasks.registry import promote_if_better


class NoCandidate(RuntimeError):
    """No model of the retraining run completed: nothing to compare or promote."""


def run_root(output_root: str, started: datetime) -> str:
    """``<output_root>/<UTC date>``: where one retraining run's pipeline writes."""
    return str(Path(output_root) / started.astimezone(UTC).strftime("%Y-%m-%d"))


def pipeline_config(
    config: PipelineConfig, started: datetime, flow_run_name: str | None
) -> PipelineConfig:
    """The retraining run's pipeline config: the dated root, run_id 'auto' made this flow
    run's name (so the pipeline subflow, this flow and its cancellation hook agree on it)."""
    run_id = resolve_run_id(config.run_id, flow_run_name)
    return config.model_copy(
        update={"output_root": run_root(config.output_root, started), "run_id": run_id}
    )


def stop_sagemaker_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation hook: stop the SageMaker jobs of this retraining run (its run dir)."""
    started = flow_run.start_time or flow_run.expected_start_time or datetime.now(UTC)
    stop_jobs_under(
        flow_run,
        lambda config: str(resolve_run_dir(pipeline_config(config, started, flow_run.name))),
    )


@flow(name="monthly-retrain", log_prints=True, on_cancellation=[stop_sagemaker_jobs])
def monthly_retrain(
    config: PipelineConfig = PipelineConfig(output_root="runs/monthly"),  # noqa: B008
    registry_dir: str = "runs/registry",
    min_improvement: float = 0.0,
    collect: CollectConfig | None = None,
    phase2: Phase2Config | None = None,
) -> dict[str, Any]:
    """Retrain into ``<config.output_root>/<UTC date>`` (``.../runs/<run_id>`` with
    ``config.run_id``); returns the promotion decision.

    The whole pipeline config applies (``backend: sagemaker`` trains on SageMaker with
    ``config.sagemaker``). A run that fails its success criteria ends Failed before any
    promotion: a candidate must pass them to be compared with production. ``collect`` (with
    ``phase2``'s noise and merge settings; its retraining run is ``config``) adds phase 2.
    """
    run_config = pipeline_config(config, datetime.now(UTC), current_flow_run.get_name())
    root = str(resolve_run_dir(run_config))
    summary = streamguard_pipeline(run_config)
    best = summary.get("best_seed")
    if collect is not None:
        # phase 2 runs inside this run's directory (its retraining drops the run_id: flows/phase2)
        best = refresh_and_retrain(config, root, collect, phase2) or best
    if not best or not best.get("model_dir"):
        raise NoCandidate(f"no completed model in {root}: see its production_report.md")
    decision = promote_if_better(
        registry_dir,
        best["model_dir"],
        {"model": best["model"], "seed": best["seed"]},
        str(Path(root) / "data" / "valid"),  # with a run_id, data/ links to the shared set
        min_improvement,
        root,
    )
    print(
        f"candidate {decision['version']}: {decision['reason']} "
        f"({'promoted' if decision['promote'] else 'production kept'})"
    )
    return decision


def refresh_and_retrain(
    config: PipelineConfig, root: str, collect: CollectConfig, phase2: Phase2Config | None
) -> dict[str, Any] | None:
    """Collect (offline fallback when every online source fails), then phase 2 over the new
    phase-1 run; returns phase 2's best seed (None when it completed no model)."""
    collected = str(Path(root) / "collected")
    settings = collect.model_copy(update={"output_dir": collected})
    state = collect_flow(settings, return_state=True)
    failed = not state.is_completed()
    if failed or not state.result()["totals"].get("functions"):
        why = state.message if failed else "no function collected"
        if collect.offline_fallback is None:
            raise NoCandidate(f"collection failed and no offline fallback: {why}")
        print(f"collection failed ({why}); falling back to the offline source")
        fallback = settings.model_copy(
            update={"sources": [collect.offline_fallback], "output_dir": f"{collected}-offline"}
        )
        collect_flow(fallback)
        collected = fallback.output_dir
    p2 = (phase2 or Phase2Config()).model_copy(
        update={
            "phase1_root": root,
            "collected_dir": collected,
            "output_root": str(Path(root) / "phase2"),
            "retrain": config,
        }
    )
    result = phase2_flow(p2)
    return result.get("best_seed")


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.monthly_retrain``: one retraining run with a preset; 1 when it fails."""
    from flows.presets import exit_status, load_preset, override, preset_names
    from streamguard_core.config import SOURCE_CLASSES, SOURCE_KINDS

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="quick", help=f"one of {preset_names()} or a YAML path")
    parser.add_argument("--output-root", default="runs/monthly")
    parser.add_argument(
        "--run-id", default=None,
        help="write into <output root>/<date>/runs/RUN_ID ('auto': the flow run's name)",
    )  # fmt: skip
    parser.add_argument("--registry-dir", default="runs/registry")
    parser.add_argument("--min-improvement", type=float, default=0.0)
    parser.add_argument(
        "--collect", action="append", choices=SOURCE_KINDS, default=[],
        help="refresh the data through these collectors and add phase 2 (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    config = override(load_preset(args.preset), output_root=args.output_root, run_id=args.run_id)
    collect = None
    if args.collect:
        collect = CollectConfig(sources=[SOURCE_CLASSES[k]() for k in args.collect])
    state = monthly_retrain(
        config, args.registry_dir, args.min_improvement, collect, return_state=True
    )
    return exit_status(state, "monthly-retrain")


if __name__ == "__main__":
    sys.exit(main())
