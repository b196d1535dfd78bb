"""``train-production``: every model x seed on a processed data set, then aggregate and report.

On a local worker with several GPUs the seeds run concurrently, one GPU each; on one GPU or
a CPU they run one after another. A collapsed or failed seed never cancels the others: its
``run_status.json`` says why and the aggregate reports it.

    python -m flows.train_production --data-dir runs/pipeline/data --quick
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.futures import wait

from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.pipeline.config import SuccessCriteria, TrainingPlan
from streamguard_core.pipeline.runner import read_run_status, seed_dir
from tasks.report import publish_results
from tasks.training import aggregate_task, train_model_task

Backend = Literal["local", "sagemaker"]


def local_devices() -> list[str | None]:
    """One slot per CUDA device (``cuda:<i>``), or a single default slot (one GPU or CPU)."""
    import torch

    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(n)] if n > 1 else [None]


def stop_sagemaker_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation hook: stop this run's SageMaker jobs (listed in sagemaker_jobs.json)."""
    import json

    params = flow_run.parameters or {}
    jobs_file = Path(params.get("output_root", "runs/pipeline")) / "sagemaker_jobs.json"
    if params.get("backend") != "sagemaker" or not jobs_file.exists():
        return
    from streamguard_core.aws.jobs import stop_training_job
    from tasks.sagemaker import boto3_session

    cfg = SageMakerConfig.model_validate(params["sagemaker"])
    sm = boto3_session(params.get("aws_credentials_block"), cfg.region).client("sagemaker")
    for spec in json.loads(jobs_file.read_text()).values():
        stop_training_job(sm, spec["job_name"])


@flow(name="train-production", log_prints=True, on_cancellation=[stop_sagemaker_jobs])
def train_production(
    data_dir: str,
    plan: TrainingPlan | None = None,
    criteria: SuccessCriteria | None = None,
    output_root: str = "runs/pipeline",
    backend: Backend = "local",
    sagemaker: SageMakerConfig | None = None,
    aws_credentials_block: str | None = None,
) -> dict[str, Any]:
    """Train ``plan.models`` x ``plan.seeds`` on ``data_dir``; aggregate; publish the report.

    ``backend="sagemaker"`` runs every model x seed as a managed-spot job configured by
    ``sagemaker`` (credentials: the ``AwsCredentials`` block named ``aws_credentials_block``, or
    boto3's default chain).
    """
    plan, criteria = plan or TrainingPlan(), criteria or SuccessCriteria()
    logger = get_run_logger()
    if backend == "sagemaker":
        from tasks.sagemaker import run_sagemaker_jobs

        if sagemaker is None:
            raise ValueError(
                "backend='sagemaker' needs the 'sagemaker' parameter (image_uri, role_arn, "
                "bucket, ...): see the README's SageMaker section"
            )
        run_sagemaker_jobs(data_dir, plan, output_root, sagemaker, aws_credentials_block)
    else:
        jobs = [(m, s) for m in plan.models for s in plan.seeds]
        slots = local_devices()
        logger.info("%d runs on %d slot(s): %s", len(jobs), len(slots), slots)
        for start in range(0, len(jobs), len(slots)):
            wave = jobs[start : start + len(slots)]
            tasks = [
                # a cached result is only trusted while the run's files are still there
                train_model_task.with_options(
                    refresh_cache=_status(output_root, model, seed) != "completed"
                )
                for model, seed in wave
            ]
            if len(slots) == 1:
                # one device: run in this thread. torch's CPU kernels ran ~24% slower when
                # called from a worker thread here (bench/pipeline.py, 2 cores)
                (model, seed), device = wave[0], slots[0]
                tasks[0](model, seed, data_dir, output_root, plan, device, return_state=True)
            else:
                wait(
                    [
                        run.submit(model, seed, data_dir, output_root, plan, device)
                        for run, (model, seed), device in zip(tasks, wave, slots, strict=False)
                    ]
                )
    for model in plan.models:
        for seed in plan.seeds:
            status = read_run_status(seed_dir(output_root, model, seed)) or {}
            if status.get("status") != "completed":
                logger.warning("%s seed %d: %s (%s)", model, seed, status.get("status", "missing"),
                               status.get("error"))  # fmt: skip
    summary = aggregate_task(output_root, list(plan.models), list(plan.seeds), criteria)
    publish_results(summary, criteria.min_mean_f1)
    verdict = "PASSED" if summary["success"]["passed"] else "FAILED"
    print(
        f"best model {summary['best_overall_model']} (mean F1 {summary['best_overall_f1']}); "
        f"success criteria {verdict}; report {summary['report_path']}"
    )
    return summary


def _status(output_root: str, model: str, seed: int) -> str | None:
    status = read_run_status(seed_dir(output_root, model, seed))
    return None if status is None else status.get("status")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="a processed data set")
    parser.add_argument("--output-root", default="runs/pipeline")
    parser.add_argument("--models", default="transformer,gnn,baseline")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--quick", action="store_true", help="1 epoch of 4 steps, tiny models")
    args = parser.parse_args()
    from flows.presets import quick_plan

    base = quick_plan() if args.quick else TrainingPlan()
    chosen = base.model_copy(
        update={"models": args.models.split(","), "seeds": [int(s) for s in args.seeds.split(",")]}
    )
    train_production(str(Path(args.data_dir)), TrainingPlan.model_validate(chosen.model_dump()),
                     output_root=args.output_root)  # fmt: skip
