"""``streamguard-pipeline``: data -> preprocess -> preflight -> train-production -> report.

A preflight no-go stops the run in a Failed state naming the failed checks (and raises the
``streamguard.preflight.failed`` event). Run it with the embedded, ephemeral Prefect::

    python -m flows.pipeline                       # the demo preset on the synthetic data
    python -m flows.pipeline --preset quick        # seconds: 1 seed, 4 steps
    python -m flows.pipeline --data ../shared/data --preset full
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.train_production import train_production
from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.pipeline.config import SuccessCriteria, TrainingPlan
from tasks.data import preprocess_task, publish_data_summary
from tasks.training import preflight_task


@flow(name="streamguard-pipeline", log_prints=True)
def streamguard_pipeline(
    data: DataConfig | None = None,
    preprocessing: PreprocessConfig | None = None,
    plan: TrainingPlan | None = None,
    criteria: SuccessCriteria | None = None,
    output_root: str = "runs/pipeline",
    backend: Literal["local", "sagemaker"] = "local",
    run_preflight: bool = True,
    sagemaker: SageMakerConfig | None = None,
    aws_credentials_block: str | None = None,
) -> dict[str, Any]:
    """The production pipeline; returns the overall production summary.

    With ``backend="sagemaker"`` training runs as SageMaker jobs (``sagemaker`` settings,
    ``aws_credentials_block``); preprocessing and preflight still run on the worker.
    """
    data, preprocessing = data or DataConfig(), preprocessing or PreprocessConfig()
    plan, criteria = plan or TrainingPlan(), criteria or SuccessCriteria()
    logger = get_run_logger()
    data_dir = str(Path(output_root) / "data")
    metadata = Path(data_dir) / "preprocessing_metadata.json"
    data_summary = preprocess_task.with_options(refresh_cache=not metadata.exists())(
        data, preprocessing, data_dir
    )
    publish_data_summary(data_summary)
    if run_preflight:
        preflight_task(
            data_dir, list(plan.models), plan, preprocessing.max_seq_len,
            str(Path(output_root) / "preflight_report.json"),
        )  # fmt: skip
    else:
        logger.warning("preflight skipped (run_preflight=False)")
    summary = train_production(
        data_dir, plan, criteria, output_root, backend, sagemaker, aws_credentials_block
    )
    print(_headline(summary))
    return summary


def _headline(summary: dict[str, Any]) -> str:
    lines = ["", "model        seeds  mean F1  std     95% CI            ROC-AUC"]
    for model, s in summary["models"].items():
        f1, auc = s["metrics"]["f1"], s["metrics"]["roc_auc"]
        lines.append(
            f"{model:12s} {s['n_completed']}/{s['n_seeds']}    {_fmt(f1['mean'])}   "
            f"{_fmt(f1['std'])}  [{_fmt(f1['ci95_low'])}, {_fmt(f1['ci95_high'])}]  "
            f"{_fmt(auc['mean'])}"
        )
    verdict = "PASSED" if summary["success"]["passed"] else "FAILED"
    lines += [
        f"best model: {summary['best_overall_model']} (mean F1 {_fmt(summary['best_overall_f1'])})",
        f"success criteria: {verdict}",
        f"summary: {summary['summary_path']}",
        f"report:  {summary['report_path']}",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "  n/a " if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.pipeline``: run the pipeline with a preset and optional real data."""
    from flows.presets import load_preset, preset_names

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="demo", help=f"one of {preset_names()} or a YAML path")
    parser.add_argument(
        "--data",
        default=None,
        help="real data instead of the synthetic set: a folder like ../shared/data (Devign "
        "train+valid with the CodeXGLUE split) or one input file (Devign/Juliet/JSONL)",
    )
    parser.add_argument(
        "--output-root", default=None, help="default: the preset's or runs/pipeline"
    )
    parser.add_argument("--seeds", default=None, help="comma-separated, overrides the preset")
    parser.add_argument("--models", default=None, help="comma-separated, overrides the preset")
    parser.add_argument("--no-preflight", action="store_true", help="skip the preflight checks")
    parser.add_argument(
        "--backend", choices=["local", "sagemaker"], default=None,
        help="where training runs (default: the preset's); sagemaker reads the preset's "
        "'sagemaker' settings",
    )  # fmt: skip
    parser.add_argument(
        "--aws-credentials-block", default=None, help="prefect-aws AwsCredentials block name"
    )
    args = parser.parse_args(argv)
    params = load_preset(args.preset)
    if args.data:
        params["data"] = {**params.get("data", {}), **data_from_path(args.data)}
    plan = dict(params.get("plan", {}))
    if args.seeds:
        plan["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.models:
        plan["models"] = args.models.split(",")
    summary = streamguard_pipeline(
        data=DataConfig.model_validate(params.get("data", {})),
        preprocessing=PreprocessConfig.model_validate(params.get("preprocessing", {})),
        plan=TrainingPlan.model_validate(plan),
        criteria=SuccessCriteria.model_validate(params.get("criteria", {})),
        output_root=args.output_root or params.get("output_root", "runs/pipeline"),
        backend=args.backend or params.get("backend", "local"),
        run_preflight=not args.no_preflight and params.get("run_preflight", True),
        sagemaker=SageMakerConfig.model_validate(params["sagemaker"])
        if params.get("sagemaker")
        else None,
        aws_credentials_block=args.aws_credentials_block or params.get("aws_credentials_block"),
    )
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
