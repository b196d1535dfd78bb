"""``phase2``: score -> weight -> merge -> retrain -> compare, on top of a phase-1 run.

1. The collected projects are split: a held-out share (``merge.test_projects`` or a seeded
   ``test_project_fraction``) becomes the phase-2 test split, whole projects, never filtered.
2. Every phase-1 model x seed scores the collected functions of the other projects
   (cached: a second run with other noise settings reuses the scores).
3. Noise reduction keeps each function at a weight from the ensemble's confidence in its label
   (``noise``: 1.0 above 0.8, 0.3 from 0.6, a 10% seeded sample of the rest at 0.1).
4. The kept rows join phase 1's train; phase 1's valid stays the validation split. The
   distribution check compares phase-1 and merged train (a warning artifact and event past its
   bounds); preprocessing deduplicates across the merged sets (its leakage report).
5. The phase-2 pipeline (``retrain``: plan, criteria, backend) trains with per-record weights.
6. Phase 1 and phase 2 are scored on the same validation and test items and compared with the
   paired statistics (``comparison/phase_comparison.md``), with a verdict per model.

Run it with the embedded, ephemeral Prefect::

    # the measured run (README "Phase 2"): the full preset's plan with one seed
    python -m flows.phase2 --phase1-root runs/full --collected runs/collected
        --preset full --seeds 42 --output-root runs/phase2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.pipeline import streamguard_pipeline
from streamguard_core.config import Phase2Config, load_yaml
from streamguard_core.io import atomic_write_json
from streamguard_core.phase2 import run
from tasks.phase2 import compare_task, merge_task, noise_task, score_task, split_task


class Phase2Failed(RuntimeError):
    """Phase 2 could not produce a comparison (no phase-2 model completed)."""


@flow(name="phase2", log_prints=True)
def phase2(config: Phase2Config = Phase2Config()) -> dict[str, Any]:  # noqa: B008
    """Phase 2 over ``config.phase1_root`` and ``config.collected_dir``; returns the summary
    (split, noise counts, distribution warnings, the phase-2 run, the comparison verdicts)."""
    logger = get_run_logger()
    Path(config.output_root).mkdir(parents=True, exist_ok=True)
    split = split_task(config)
    scorers = config.scorers or run.default_scorers(config.phase1_root)
    if not scorers:
        raise Phase2Failed(f"{config.phase1_root}: no completed phase-1 model to score with")
    scores = score_task(config, scorers, split["train_projects"])
    noise = noise_task(config, scores, split["train_projects"])
    merged = merge_task(config, noise["weighted"], split["test_projects"])
    retrain = run.retrain_config(config, merged["inputs"])
    state = streamguard_pipeline(retrain, return_state=True)
    if not state.is_completed():
        logger.warning("phase-2 pipeline ended %s: %s", state.name, state.message)
    best_seed = state.result().get("best_seed") if state.is_completed() else None
    data_dir = str(Path(retrain.output_root) / "data")
    phase1_models = set(run.discover_runs(config.phase1_root)[0])
    models = [m for m in retrain.plan.all_names if m in phase1_models]
    if not models:
        raise Phase2Failed(
            f"no model of the phase-2 plan ({retrain.plan.all_names}) exists in phase 1 "
            f"({sorted(phase1_models)}): nothing to compare"
        )
    comparison = compare_task(config, data_dir, models, retrain.plan.seeds)
    summary = {
        "split": split,
        "scorers": scores["scorers"],
        "noise": noise["report"].get("tiers"),
        "distribution_warnings": merged["warnings"],
        "phase2_pipeline": state.name,
        "best_seed": best_seed,
        "comparison": str(Path(config.output_root) / "comparison"),
        "verdicts": {
            split_name: {m: v.get("verdict") for m, v in part.get("models", {}).items()}
            for split_name, part in comparison.get("splits", {}).items()
        },
    }
    atomic_write_json(Path(config.output_root) / "phase2_summary.json", summary)
    return summary


def config_from_args(argv: list[str] | None = None) -> Phase2Config:
    """The :class:`Phase2Config` a command line describes."""
    from flows.presets import load_preset

    parser = argparse.ArgumentParser(
        prog="python -m flows.phase2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="a Phase2Config YAML")
    parser.add_argument("--phase1-root", default=None, help="a finished pipeline run")
    parser.add_argument("--collected", default=None, help="a collect output directory")
    parser.add_argument("--output-root", default=None, help="default: the config's")
    parser.add_argument(
        "--preset", default=None,
        help="a pipeline preset (or YAML) for the phase-2 training run (its plan and criteria)",
    )  # fmt: skip
    parser.add_argument("--seeds", default=None, help="phase-2 seeds, comma-separated")
    parser.add_argument("--models", default=None, help="phase-2 models (run names or kinds)")
    parser.add_argument(
        "--priors", default=None,
        help="comma-separated noise priors: in_crash_state,single_change ('' for none)",
    )  # fmt: skip
    parser.add_argument("--test-projects", default=None, help="comma-separated project names")
    args = parser.parse_args(argv)
    config = load_yaml(args.config, Phase2Config) if args.config else Phase2Config()
    raw = config.model_dump()
    for key, value in (
        ("phase1_root", args.phase1_root),
        ("collected_dir", args.collected),
        ("output_root", args.output_root),
    ):
        if value:
            raw[key] = value
    if args.preset or args.seeds or args.models:
        from flows.presets import override

        base = load_preset(args.preset) if args.preset else config.retrain
        raw["retrain"] = override(base, models=args.models, seeds=args.seeds).model_dump()
    if args.priors is not None:
        raw["noise"]["priors"] = [p for p in args.priors.split(",") if p]
    if args.test_projects:
        raw["merge"]["test_projects"] = args.test_projects.split(",")
    return Phase2Config.model_validate(raw)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.phase2``; 1 when the flow run fails."""
    from flows.presets import exit_status

    state = phase2(config_from_args(argv), return_state=True)
    if exit_status(state, "phase2"):
        return 1
    print(json.dumps(state.result()["verdicts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
