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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.train_production import stop_sagemaker_jobs, train_production
from streamguard_core.config import PipelineConfig
from tasks.data import preprocess_task, publish_data_summary
from tasks.training import preflight_task


@flow(name="streamguard-pipeline", log_prints=True, on_cancellation=[stop_sagemaker_jobs])
def streamguard_pipeline(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """The production pipeline; returns the overall production summary.

    With ``config.backend == "sagemaker"`` training runs as SageMaker jobs (``config.sagemaker``,
    ``config.aws_credentials_block``, ``config.s3_bucket_block``); preprocessing and preflight
    still run on the worker.
    """
    logger = get_run_logger()
    data_dir = str(Path(config.output_root) / "data")
    metadata = Path(data_dir) / "preprocessing_metadata.json"
    data_summary = preprocess_task.with_options(refresh_cache=not metadata.exists())(
        config.data, config.preprocessing, data_dir
    )
    publish_data_summary(data_summary)
    if config.run_preflight:
        report = Path(config.output_root) / "preflight_report.json"
        preflight_task(data_dir, config.plan, str(report))
    else:
        logger.warning("preflight skipped (run_preflight=False)")
    return train_production(data_dir, config)


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
