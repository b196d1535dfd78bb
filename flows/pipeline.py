"""``streamguard-pipeline``: data -> preprocess -> preflight -> train-production -> report.

Its one parameter is a :class:`~streamguard_core.config.PipelineConfig` (every preset in
``deployments/params`` is one). A preflight no-go stops the run in a Failed state naming the
failed checks (and raises the ``streamguard.preflight.failed`` event); failed success criteria
end it Failed too, naming the failed checks, after the report and artifacts are published (and
``streamguard.model.below_threshold`` is raised per failing model). Run it with the embedded,
ephemeral Prefect (exit code 1 when the run fails)::

    python -m flows.pipeline                       # the demo preset on the synthetic data
    python -m flows.pipeline --preset quick        # seconds: 1 seed, 4 steps
    python -m flows.pipeline --data ../shared/data --preset full --models gnn,baseline
    python -m flows.pipeline --preset quick --run-id a   # beside other runs: runs/quick/runs/a/

A run holds its run directory (the output root, or ``<output root>/runs/<run id>`` with
``--run-id``) until it ends; a second run on the same directory fails at once, naming the
holder. Runs with a run id share one processed data set per data + preprocessing settings
(``<output root>/data/<key>``; see ``streamguard_core/pipeline/rundir.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.train_production import run_training, stop_jobs_under
from streamguard_core.config import PipelineConfig
from streamguard_core.pipeline.rundir import (
    PipelineRunPaths,
    data_lock,
    hold_run_dir,
    link_run_data,
    resolve_run_dir,
    run_paths,
)
from tasks.data import preprocess_task, publish_data_summary
from tasks.training import preflight_task


def stop_sagemaker_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation hook: stop the SageMaker jobs listed in this run's run directory."""
    stop_jobs_under(flow_run, lambda config: str(resolve_run_dir(config, flow_run.name)))


@flow(name="streamguard-pipeline", log_prints=True, on_cancellation=[stop_sagemaker_jobs])
def streamguard_pipeline(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """The production pipeline; returns the overall production summary.

    It writes into its run directory (``config.output_root``, or ``output_root/runs/<run_id>``)
    and holds that directory until it ends: a second run on it fails at once (``RunDirBusy``).
    With ``config.backend == "sagemaker"`` training runs as SageMaker jobs (``config.sagemaker``,
    ``config.aws_credentials_block``, ``config.s3_bucket_block``); preprocessing and preflight
    still run on the worker.
    """
    logger = get_run_logger()
    name = current_flow_run.get_name()
    holder = f"streamguard-pipeline flow run {name!r}"
    run_dir = resolve_run_dir(config, name)
    with hold_run_dir(run_dir, holder):
        paths = run_paths(config, run_dir)
        data_dir = prepare_data(config, paths, holder)
        if config.run_preflight:
            preflight_task(data_dir, config.plan, str(paths.preflight_report))
        else:
            logger.warning("preflight skipped (run_preflight=False)")
        return run_training(data_dir, paths.run_config(config))  # in this run: no subflow


def prepare_data(config: PipelineConfig, paths: PipelineRunPaths, holder: str) -> str:
    """The run's processed data set: preprocessed here, or a shared one another run built."""
    with data_lock(paths, holder) as complete:
        if paths.shared_data and complete:
            get_run_logger().info(
                "reusing the processed data set %s (same data, preprocessing settings and "
                "input files as the run that built it)", paths.data_dir
            )  # fmt: skip
        else:
            summary = preprocess_task.with_options(refresh_cache=not complete)(
                config.data, config.preprocessing, str(paths.data_dir)
            )
            publish_data_summary(summary)
    link_run_data(paths)
    return str(paths.data_dir)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m flows.pipeline`` (each flag overrides a preset field)."""
    from flows.presets import preset_names

    parser = argparse.ArgumentParser(
        prog="python -m flows.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="demo", help=f"one of {preset_names()} or a YAML path")
    parser.add_argument(
        "--data",
        default=None,
        help="real data instead of the synthetic set: a folder like ../shared/data (Devign "
        "train+valid with the CodeXGLUE split) or one input file (Devign/Juliet/JSONL)",
    )
    parser.add_argument("--output-root", default=None, help="default: the preset's")
    parser.add_argument(
        "--run-id", default=None,
        help="write into <output root>/runs/RUN_ID so that runs share one output root (and its "
        "processed data) side by side; 'auto': the Prefect flow run's name",
    )  # fmt: skip
    parser.add_argument("--seeds", default=None, help="comma-separated, replaces the preset's")
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated run names or kinds: keeps those of the preset's models (a kind "
        "the preset lacks gets that kind's defaults)",
    )
    parser.add_argument("--no-preflight", action="store_true", help="skip the preflight checks")
    parser.add_argument(
        "--backend", choices=["local", "sagemaker"], default=None,
        help="where training runs (default: the preset's); sagemaker reads the preset's "
        "'sagemaker' settings",
    )  # fmt: skip
    parser.add_argument(
        "--aws-credentials-block", default=None, help="prefect-aws AwsCredentials block name"
    )
    parser.add_argument("--s3-bucket-block", default=None, help="prefect-aws S3Bucket block name")
    return parser


def config_from_args(argv: list[str] | None = None) -> PipelineConfig:
    """The :class:`PipelineConfig` a command line describes: the preset, then the flags."""
    from flows.presets import load_preset, override

    args = build_parser().parse_args(argv)
    config = load_preset(args.preset)
    data = {**config.data.model_dump(), **data_from_path(args.data)} if args.data else None
    return override(
        config,
        models=args.models,
        seeds=args.seeds,
        data=data,
        output_root=args.output_root,
        run_id=args.run_id,
        backend=args.backend,
        run_preflight=False if args.no_preflight else None,
        aws_credentials_block=args.aws_credentials_block,
        s3_bucket_block=args.s3_bucket_block,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.pipeline``: run the pipeline with a preset; 1 when the run fails."""
    from flows.presets import exit_status

    state = streamguard_pipeline(config_from_args(argv), return_state=True)
    if exit_status(state, "streamguard-pipeline"):
        return 1
    summary = state.result()
    print(json.dumps({"best_overall_model": summary["best_overall_model"],
                      "best_overall_f1": summary["best_overall_f1"],
                      "passed": summary["success"]["passed"]}))  # fmt: skip
    return 0


def data_from_path(path: str) -> dict[str, Any]:
    """DataConfig fields for ``--data``: a ../shared/data-like folder or one input file."""
    p = Path(path)
    if p.is_dir():
        train, valid = p / "devign_train.jsonl.gz", p / "devign_valid.jsonl.gz"
        if not (train.exists() and valid.exists()):
            raise SystemExit(f"{p}: expected devign_train.jsonl.gz and devign_valid.jsonl.gz")
        out: dict[str, Any] = {"inputs": [str(train), str(valid)]}
        if (p / "codexglue_splits").is_dir():
            out["codexglue_splits"] = str(p / "codexglue_splits")
        return out
    if not p.exists():
        raise SystemExit(f"{p}: no such file or folder")
    return {"inputs": [str(p)]}


if __name__ == "__main__":
    sys.exit(main())
