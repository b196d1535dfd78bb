"""SageMaker backend of the training flows: one managed-spot job per job spec.

The AWS side is prefect-aws, used the way its users expect: the bucket comes from the
``S3Bucket`` block named ``s3_bucket_block`` (what ``python -m deployments.install_aws`` saves;
its ``bucket_folder`` is put before ``sagemaker.prefix``), else from ``sagemaker.bucket``;
credentials from the ``AwsCredentials`` block named ``credentials_block``, else the bucket
block's own credentials, else boto3's default chain. Clients come from the block
(``get_client``: its region and ``aws_client_parameters`` apply), endpoints otherwise from boto3's
own variables (``AWS_ENDPOINT_URL_SAGEMAKER`` points it at the emulator).

Only I/O is retried: a job that failed on SageMaker is a result (``run_status.json`` says why),
not a retry. Cancelling the Prefect flow run stops the running jobs (:func:`stop_jobs`).
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.futures import wait

from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.config import TrainJobSpec
from streamguard_core.training.job import RunStatus, read_run_status

IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [2, 5, 15]}
JOBS_FILE = "sagemaker_jobs.json"


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger; a plain one outside Prefect (``.fn()``, hooks)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("streamguard.tasks.sagemaker")


def aws_credentials(credentials_block: str | None, s3_bucket_block: str | None = None) -> Any:
    """The ``AwsCredentials`` block named ``credentials_block``, else the named ``S3Bucket``
    block's credentials, else None (boto3's default chain)."""
    if credentials_block:
        from prefect_aws import AwsCredentials

        return AwsCredentials.load(credentials_block)
    if s3_bucket_block:
        from prefect_aws import S3Bucket

        return S3Bucket.load(s3_bucket_block).credentials
    return None


def aws_clients(
    cfg: SageMakerConfig, credentials_block: str | None, s3_bucket_block: str | None = None
) -> tuple[Any, Any]:
    """``(sagemaker, s3)`` boto3 clients (see the module docstring for where credentials come
    from); ``cfg.region``, when set, is the region of both."""
    credentials = aws_credentials(credentials_block, s3_bucket_block)
    if credentials is None:
        import boto3

        session = boto3.Session(region_name=cfg.region)
        return session.client("sagemaker"), session.client("s3")
    if cfg.region:
        credentials = credentials.model_copy(update={"region_name": cfg.region})
    return credentials.get_client("sagemaker"), credentials.get_client("s3")


def with_bucket(cfg: SageMakerConfig, s3_bucket_block: str | None) -> SageMakerConfig:
    """``cfg`` with the bucket (and folder) of the named ``S3Bucket`` block.

    Raises:
        ValueError: no block is named and ``cfg.bucket`` is empty.
    """
    if s3_bucket_block:
        from prefect_aws import S3Bucket

        block = S3Bucket.load(s3_bucket_block)
        if cfg.bucket and cfg.bucket != block.bucket_name:
            _logger().warning(
                "sagemaker.bucket %r is overridden by the S3Bucket block %r (bucket %r)",
                cfg.bucket, s3_bucket_block, block.bucket_name,
            )  # fmt: skip
        prefix = "/".join(p for p in (block.bucket_folder.strip("/"), cfg.prefix.strip("/")) if p)
        cfg = cfg.model_copy(update={"bucket": block.bucket_name, "prefix": prefix})
    cfg.require_bucket()
    return cfg


def _flow_run_cancelling(flow_run_id: Any) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state is not None and (state.is_cancelling() or state.is_cancelled())


@task(name="sagemaker-upload-data", **IO_RETRIES)
def upload_data_task(
    data_dir: str, cfg: SageMakerConfig, credentials_block: str | None,
    s3_bucket_block: str | None = None,
) -> str:  # fmt: skip
    """The processed data set as the 'data' channel (content-addressed; unchanged data skipped)."""
    from streamguard_core.aws.s3 import upload_channel

    _, s3 = aws_clients(cfg, credentials_block, s3_bucket_block)
    return upload_channel(s3, data_dir, cfg.require_bucket(), f"{cfg.prefix.strip('/')}/data")


class JobOutcome(RuntimeError):
    """The job ran and ended failed/collapsed/stopped: reported, never retried."""


def _retry_io_only(state: Any) -> bool:
    """Retry network/throttling errors; a job's own outcome is final."""
    return not isinstance(state.result(raise_on_failure=False), JobOutcome)


@task(
    name="sagemaker-job",
    task_run_name="sagemaker {spec.name} seed {spec.seed}",
    retry_condition_fn=lambda _task, _run, state: _retry_io_only(state),
    **IO_RETRIES,
)
def sagemaker_job_task(
    spec: TrainJobSpec, cfg: SageMakerConfig, run_id: str, data_uri: str,
    credentials_block: str | None, s3_bucket_block: str | None = None,
) -> RunStatus:  # fmt: skip
    """Submit one job, follow its status transitions, download its files into spec.run_dir.

    Raises:
        JobOutcome: the job ended failed or collapsed (its run_status.json says why).
    """
    from streamguard_core.backends.sagemaker import SageMakerBackend

    logger = _logger()
    sm, s3 = aws_clients(cfg, credentials_block, s3_bucket_block)
    backend = SageMakerBackend(sm, s3, cfg, run_id, data_uri)
    ctx = FlowRunContext.get()
    flow_run_id = ctx.flow_run.id if ctx and ctx.flow_run else None
    job_name = backend.job_spec(spec).job_name
    status = backend.run(
        spec,
        should_cancel=(lambda: _flow_run_cancelling(flow_run_id)) if flow_run_id else None,
        on_transition=lambda t: logger.info(
            "%s: %s %s", job_name, t.get("Status"), t.get("StatusMessage", "")
        ),
    )
    if status.status != "completed":
        raise JobOutcome(f"{spec.name} seed {spec.seed} {status.status}: {status.error}")
    return status


def _run_id() -> str:
    """The flow run's id (short): retries and reruns of one flow run find their own jobs."""
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id)[:8] if ctx and ctx.flow_run else uuid.uuid4().hex[:8]


def run_sagemaker_jobs(
    data_dir: str,
    specs: list[TrainJobSpec],
    output_root: str,
    cfg: SageMakerConfig,
    credentials_block: str | None = None,
    s3_bucket_block: str | None = None,
) -> list[RunStatus]:
    """Budget check, upload, then every spec as a job, ``max_concurrent_jobs`` at once.

    Called from a flow. Each job's files land in ``spec.run_dir``, as a local run's do; the
    returned statuses are in the order of ``specs``. ``output_root/sagemaker_jobs.json`` lists
    the jobs (for :func:`stop_jobs`), and a ``sagemaker-costs`` table artifact their costs.

    Raises:
        BudgetExceeded: the worst case (max wait x price x jobs) is above ``cfg.budget_usd``.
        ValueError: no bucket, or a spec too long for a hyperparameter.
    """
    from streamguard_core.aws.config import redact, spec_hyperparameters
    from streamguard_core.backends.sagemaker import check_budget, container_spec, job_spec

    logger = _logger()
    worst = check_budget(cfg, len(specs))
    logger.info(
        "%d SageMaker jobs on %s (spot %s); worst case $%.2f%s",
        len(specs), cfg.instance_type, cfg.use_spot, worst,
        f" of a ${cfg.budget_usd:.2f} budget" if cfg.budget_usd else "",
    )  # fmt: skip
    cfg = with_bucket(cfg, s3_bucket_block)
    for spec in specs:  # before the upload: a spec SageMaker would refuse fails here
        spec_hyperparameters(container_spec(spec))
    data_uri = upload_data_task(data_dir, cfg, credentials_block, s3_bucket_block)
    run_id = _run_id()
    Path(output_root).mkdir(parents=True, exist_ok=True)
    (Path(output_root) / JOBS_FILE).write_text(
        json.dumps(
            {
                "run_id": run_id,
                "s3_bucket_block": s3_bucket_block,
                "jobs": {
                    f"{s.job_key}/seed_{s.seed}": redact(
                        job_spec(cfg, run_id, s, data_uri).model_dump(mode="json")
                    )
                    for s in specs
                },
            },
            indent=2,
        )
    )
    futures = []
    for start in range(0, len(specs), cfg.max_concurrent_jobs):
        wave = [
            sagemaker_job_task.submit(
                spec, cfg, run_id, data_uri, credentials_block, s3_bucket_block
            )
            for spec in specs[start : start + cfg.max_concurrent_jobs]
        ]
        wait(wave)
        futures.extend(wave)
    statuses = [_final_status(spec, future) for spec, future in zip(specs, futures, strict=True)]
    create_table_artifact(
        key="sagemaker-costs",
        table=[
            {
                "model": st.model, "seed": st.seed, "job": st.job_name, "status": st.status,
                "training_s": (st.cost or {}).get("training_time_s"),
                "billable_s": (st.cost or {}).get("billable_time_s"),
                "spot_savings_pct": (st.cost or {}).get("spot_savings_pct"),
                "cost_usd": (st.cost or {}).get("cost_usd"),
            }
            for st in statuses
        ],
        description="SageMaker jobs: training vs billable time, spot savings, cost (on-demand "
        "price x billable time: an upper bound for spot)",
    )  # fmt: skip
    return statuses


def _final_status(spec: TrainJobSpec, future: Any) -> RunStatus:
    """The job's run_status.json; a failed status (written) when the task never got one, i.e.
    submitting or polling kept failing."""
    written = read_run_status(spec.run_dir)
    if written is not None:
        return written
    state = future.state
    error = state.result(raise_on_failure=False) if state.is_failed() else None
    failed = RunStatus(
        model=spec.name, kind=spec.model.kind, seed=spec.seed, status="failed",
        error=f"{type(error).__name__}: {error}" if isinstance(error, BaseException)
        else f"the SageMaker task ended {state.type.value} without a status",
        backend="sagemaker", run_dir=spec.run_dir,
    )  # fmt: skip
    failed.write()
    return failed


def stop_jobs(output_root: str, cfg: SageMakerConfig, credentials_block: str | None) -> None:
    """Stop every job listed in ``output_root/sagemaker_jobs.json`` (the flow's on_cancellation
    hook). Jobs that already ended are left alone; a job that cannot be stopped is logged and
    the others are still stopped. Without ``credentials_block`` the credentials of the S3Bucket
    block the run used (recorded in the file) apply, else boto3's default chain."""
    from streamguard_core.aws.jobs import stop_training_job

    jobs_file = Path(output_root) / JOBS_FILE
    if not jobs_file.exists():
        return
    listed = json.loads(jobs_file.read_text())
    logger = _logger()
    sm, _ = aws_clients(cfg, credentials_block, listed.get("s3_bucket_block"))
    for key, spec in listed.get("jobs", {}).items():
        try:
            stop_training_job(sm, spec["job_name"])
            logger.info("stop requested for %s (%s)", spec["job_name"], key)
        except Exception as exc:  # one job's error must not keep the others running
            logger.error("could not stop %s (%s): %s", spec["job_name"], key, exc)
