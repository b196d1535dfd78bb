"""``monthly-retrain``: refresh the data, run the pipeline, promote the new best model if better.

The new best model (best seed of the best model) and the current production model are scored
on the *same* validation data (the refreshed data set's valid split); the file-based registry
(``registry_dir``: versions, ``production.json`` pointer, ``history.jsonl``) moves its
production pointer only when the candidate's F1 beats production's by ``min_improvement``.

    python -m flows.monthly_retrain --preset quick
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow

from flows.pipeline import streamguard_pipeline
from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.pipeline.config import SuccessCriteria, TrainingPlan
from tasks.registry import promote_if_better


class NoCandidate(RuntimeError):
    """No model of the retraining run completed: nothing to compare or promote."""


@flow(name="monthly-retrain", log_prints=True)
def monthly_retrain(
    data: DataConfig | None = None,
    preprocessing: PreprocessConfig | None = None,
    plan: TrainingPlan | None = None,
    criteria: SuccessCriteria | None = None,
    output_root: str = "runs/monthly",
    registry_dir: str = "runs/registry",
    min_improvement: float = 0.0,
    backend: Literal["local", "sagemaker"] = "local",
    run_preflight: bool = True,
) -> dict[str, Any]:
    """Retrain into ``<output_root>/<UTC date>``; returns the promotion decision."""
    run_root = str(Path(output_root) / datetime.now(UTC).strftime("%Y-%m-%d"))
    summary = streamguard_pipeline(
        data, preprocessing, plan, criteria, run_root, backend, run_preflight
    )
    best = summary.get("best_seed")
    if not best or not best.get("model_dir"):
        raise NoCandidate(f"no completed model in {run_root}: see its production_report.md")
    decision = promote_if_better(
        registry_dir,
        best["model_dir"],
        {"model": best["model"], "seed": best["seed"]},
        str(Path(run_root) / "data" / "valid"),
        min_improvement,
        run_root,
    )
    print(
        f"candidate {decision['version']}: {decision['reason']} "
        f"({'promoted' if decision['promote'] else 'production kept'})"
    )
    return decision


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.monthly_retrain``: one retraining run with a preset."""
    from flows.presets import load_preset, preset_names

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="quick", help=f"one of {preset_names()} or a YAML path")
    parser.add_argument("--output-root", default="runs/monthly")
    parser.add_argument("--registry-dir", default="runs/registry")
    parser.add_argument("--min-improvement", type=float, default=0.0)
    args = parser.parse_args(argv)
    params = load_preset(args.preset)
    monthly_retrain(
        DataConfig.model_validate(params.get("data", {})),
        PreprocessConfig.model_validate(params.get("preprocessing", {})),
        TrainingPlan.model_validate(params.get("plan", {})),
        SuccessCriteria.model_validate(params.get("criteria", {})),
        args.output_root,
        args.registry_dir,
        args.min_improvement,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
