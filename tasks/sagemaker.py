"""SageMaker backend of ``train-production``: one managed-spot job per model x seed.

Credentials come from a prefect-aws ``AwsCredentials`` block (by name) or boto3's default chain;
endpoints from boto3's own variables (``AWS_ENDPOINT_URL_SAGEMAKER`` points it at the emulator).
Only I/O is retried: a job that failed on SageMaker is a result (``run_status.json`` says why),
not a retry. Cancelling the Prefect flow run stops the running jobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.futures import wait

from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.pipeline.config import TrainingPlan

IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [2, 5, 15]}
JOBS_FILE = "sagemaker_jobs.json"


def boto3_session(credentials_block: str | None, region: str | None) -> Any:
    """A boto3 session from the named ``AwsCredentials`` block, else the default chain."""
    if credentials_block:
        from prefect_aws import AwsCredentials

        return AwsCredentials.load(credentials_block).get_boto3_session()
    import boto3

    return boto3.Session(region_name=region)


def _flow_run_cancelling(flow_run_id: Any) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state is not None and (state.is_cancelling() or state.is_cancelled())


@task(name="sagemaker-upload-data", **IO_RETRIES)
def upload_data_task(data_dir: str, cfg: SageMakerConfig, credentials_block: str | None) -> str:
    """The processed data set as the 'data' channel (content-addressed; unchanged data skipped)."""
    from streamguard_core.aws.s3 import upload_channel

    s3 = boto3_session(credentials_block, cfg.region).client("s3")
    return upload_channel(s3, data_dir, cfg.bucket, f"{cfg.prefix.strip('/')}/data")


@task(
    name="sagemaker-job",
    task_run_name="sagemaker {model} seed {seed}",
    retry_condition_fn=lambda _task, _run, state: _retry_io_only(state),
    **IO_RETRIES,
)
def sagemaker_job_task(
    model: str,
    seed: int,
    spec: dict[str, Any],
    cfg: SageMakerConfig,
    output_root: str,
    credentials_block: str | None,
) -> dict[str, Any]:
    """Submit one job, follow its status transitions, download its results into the seed dir."""
    from streamguard_core.aws.backend import run_sagemaker_seed
    from streamguard_core.aws.jobs import SageMakerJobSpec

    logger = get_run_logger()
    session = boto3_session(credentials_block, cfg.region)
    ctx = FlowRunContext.get()
    flow_run_id = ctx.flow_run.id if ctx and ctx.flow_run else None
    status = run_sagemaker_seed(
        session.client("sagemaker"),
        session.client("s3"),
        cfg,
        SageMakerJobSpec.model_validate(spec),
        output_root,
        model,
        seed,
        should_cancel=(lambda: _flow_run_cancelling(flow_run_id)) if flow_run_id else None,
        on_transition=lambda t: logger.info(
            "%s: %s %s", spec["job_name"], t.get("Status"), t.get("StatusMessage", "")
        ),
    )
    if status["status"] != "completed":
        raise JobOutcome(f"{model} seed {seed} {status['status']}: {status['error']}")
    return status


class JobOutcome(RuntimeError):
    """The job ran and ended failed/collapsed/stopped: reported, never retried."""


def _retry_io_only(state: Any) -> bool:
    """Retry network/throttling errors; a job's own outcome is final."""
    return not isinstance(state.result(raise_on_failure=False), JobOutcome)


def run_sagemaker_jobs(
    data_dir: str,
    plan: TrainingPlan,
    output_root: str,
    cfg: SageMakerConfig,
    credentials_block: str | None = None,
) -> list[dict[str, Any]]:
    """Budget check, upload, then every model x seed as a job, ``max_concurrent_jobs`` at once.

    Called from the ``train-production`` flow. Returns the per-seed statuses.

    Raises:
        BudgetExceeded: the worst case (max wait x price x jobs) is above ``cfg.budget_usd``.
    """
    from streamguard_core.aws.backend import check_budget, hyperparameters_for, job_spec
    from streamguard_core.aws.config import redact
    from streamguard_core.preprocess.dataset import load_metadata

    logger = get_run_logger()
    jobs = [(m, s) for m in plan.models for s in plan.seeds]
    worst = check_budget(cfg, len(jobs))
    logger.info(
        "%d SageMaker jobs on %s (spot %s); worst case $%.2f%s",
        len(jobs), cfg.instance_type, cfg.use_spot, worst,
        f" of a ${cfg.budget_usd:.2f} budget" if cfg.budget_usd else "",
    )  # fmt: skip
    data_uri = upload_data_task(data_dir, cfg, credentials_block)
    max_seq_len = int(load_metadata(data_dir)["config"]["preprocess"]["max_seq_len"])
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id)[:8] if ctx and ctx.flow_run else "local"
    specs = {
        (m, s): job_spec(cfg, run_id, m, s, data_uri, hyperparameters_for(m, s, plan, max_seq_len))
        for m, s in jobs
    }
    Path(output_root).mkdir(parents=True, exist_ok=True)
    (Path(output_root) / JOBS_FILE).write_text(
        json.dumps(
            {
                f"{m}/seed_{s}": redact(spec.model_dump(mode="json"))
                for (m, s), spec in specs.items()
            },
            indent=2,
        )
    )
    for start in range(0, len(jobs), cfg.max_concurrent_jobs):
        wave = [
            sagemaker_job_task.submit(
                m, s, specs[(m, s)].model_dump(mode="json"), cfg, output_root, credentials_block
            )
            for m, s in jobs[start : start + cfg.max_concurrent_jobs]
        ]
        wait(wave)
    from streamguard_core.pipeline.runner import read_run_status, seed_dir

    statuses = [read_run_status(seed_dir(output_root, m, s)) or {} for m, s in jobs]
    create_table_artifact(
        key="sagemaker-costs",
        table=[
            {
                "model": st.get("model"), "seed": st.get("seed"), "job": st.get("job_name"),
                "status": st.get("status"),
                "training_s": (st.get("cost") or {}).get("training_time_s"),
                "billable_s": (st.get("cost") or {}).get("billable_time_s"),
                "spot_savings_pct": (st.get("cost") or {}).get("spot_savings_pct"),
                "cost_usd": (st.get("cost") or {}).get("cost_usd"),
            }
            for st in statuses
        ],
        description="SageMaker jobs: training vs billable time, spot savings, cost (on-demand "
        "price x billable time: an upper bound for spot)",
    )  # fmt: skip
    return statuses
