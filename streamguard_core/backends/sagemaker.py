"""The SageMaker backend: each :class:`~streamguard_core.config.TrainJobSpec` as one managed
(spot) training job, ending in the same run directory a local run writes (``spec.run_dir`` with
``run_status.json``), plus the job's cost.

The job receives the spec as its one hyperparameter (``spec``); the container's entrypoint
(:mod:`streamguard_core.aws.entrypoint`) maps ``/opt/ml`` onto it and calls
:func:`~streamguard_core.training.job.run_job`, the function the local backend calls. The
Prefect task around :meth:`SageMakerBackend.run` only resolves credentials and retries I/O.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from streamguard_core.aws.config import SageMakerConfig, spec_hyperparameters
from streamguard_core.aws.entrypoint import SageMakerPaths
from streamguard_core.aws.jobs import (
    JobFailed,
    JobStopped,
    SageMakerJobSpec,
    budget_check,
    checkpoint_s3_uri,
    create_training_job,
    download_model,
    download_output,
    job_cost,
    job_name_for,
    wait_for_job,
)
from streamguard_core.backends import EpochCallback, TrainingBackend
from streamguard_core.config import TrainJobSpec
from streamguard_core.io import atomic_write_json
from streamguard_core.training.job import RunStatus, read_run_status
from streamguard_core.training.paths import RunPaths

log = logging.getLogger("streamguard.backends.sagemaker")

TransitionCallback = Callable[[dict[str, Any]], None]


def container_spec(spec: TrainJobSpec) -> TrainJobSpec:
    """``spec`` with the container's own paths (the data channel, ``/opt/ml/checkpoints/run``):
    what the job receives, whatever this machine's layout."""
    paths = SageMakerPaths.from_env({})
    return spec.with_paths(paths.data_dir, paths.run_dir)


def job_spec(
    cfg: SageMakerConfig, run_id: str, spec: TrainJobSpec, data_uri: str
) -> SageMakerJobSpec:
    """The CreateTrainingJob spec of one job: its name and checkpoint prefix come from the run
    id, ``spec.name`` and ``spec.seed`` (deterministic, so a retried submit finds the job).

    Raises:
        ValueError: no bucket (see :meth:`SageMakerConfig.require_bucket`), or the spec is
            longer than a hyperparameter value may be.
    """
    bucket = cfg.require_bucket()
    prefix = cfg.prefix.strip("/")
    return SageMakerJobSpec(
        job_name=job_name_for(run_id, spec.job_key, spec.seed),
        image_uri=cfg.image_uri,
        role_arn=cfg.role_arn,
        instance_type=cfg.instance_type,
        instance_count=cfg.instance_count,
        volume_size_gb=cfg.volume_size_gb,
        max_runtime_s=cfg.max_runtime_s,
        max_wait_s=cfg.effective_max_wait_s,
        use_spot=cfg.use_spot,
        hyperparameters=spec_hyperparameters(container_spec(spec)),
        input_s3_uri=data_uri,
        output_s3_path=f"s3://{bucket}/{prefix}/output/{run_id}/",
        checkpoint_s3_uri=checkpoint_s3_uri(bucket, prefix, run_id, spec.job_key, spec.seed),
        tags={
            "streamguard:model": spec.name,
            "streamguard:kind": spec.model.kind,
            "streamguard:seed": str(spec.seed),
            **cfg.tags,
        },
    )


def check_budget(cfg: SageMakerConfig, n_jobs: int) -> float:
    """Worst-case cost of ``n_jobs`` jobs; raises ``BudgetExceeded`` above ``cfg.budget_usd``."""
    limit = cfg.effective_max_wait_s or cfg.max_runtime_s
    return budget_check(limit, cfg.price_per_hour(), n_jobs, cfg.budget_usd, cfg.instance_count)


def _transitions(description: dict[str, Any] | None) -> list[str]:
    return [
        str(t.get("Status")) for t in (description or {}).get("SecondaryStatusTransitions") or []
    ]


def _localise_exp_config(spec: TrainJobSpec) -> None:
    """Point the container's ``exp_config.json`` at this machine's data and run directories
    (the data channel was uploaded from ``spec.data_dir``), so the file reproduces the run here."""
    path = RunPaths(spec.run_dir).exp_config
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    atomic_write_json(path, {**saved, "data_dir": spec.data_dir, "run_dir": spec.run_dir})


class SageMakerBackend:
    """Runs each job as a SageMaker training job and downloads its files into ``spec.run_dir``.

    Args:
        sm: a boto3 ``sagemaker`` client.
        s3: a boto3 ``s3`` client.
        cfg: the SageMaker settings, with a bucket.
        run_id: names this run's jobs and checkpoint prefixes (the flow run's id).
        data_uri: the processed data set's 'data' channel (``upload_channel``).
    """

    name = "sagemaker"

    def __init__(self, sm: Any, s3: Any, cfg: SageMakerConfig, run_id: str, data_uri: str) -> None:
        cfg.require_bucket()
        self.sm, self.s3, self.cfg = sm, s3, cfg
        self.run_id, self.data_uri = run_id, data_uri

    def job_spec(self, spec: TrainJobSpec) -> SageMakerJobSpec:
        """The CreateTrainingJob spec of ``spec`` in this run."""
        return job_spec(self.cfg, self.run_id, spec, self.data_uri)

    def run(
        self,
        spec: TrainJobSpec,
        on_epoch_end: EpochCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_transition: TransitionCallback | None = None,
    ) -> RunStatus:
        """Submit (or find) the job, wait, download its files into ``spec.run_dir``.

        A failed or stopped job is a ``failed`` status with SageMaker's reason (never raised),
        so one job cannot stop the others. ``on_epoch_end`` is accepted for the backend
        interface and never called (a job reports through its status transitions, passed to
        ``on_transition``); ``should_cancel`` answering True stops the job.

        Raises:
            botocore errors: I/O (network, throttling). The caller retries; the retried call
                finds the job it already created by its deterministic name.
        """
        job = self.job_spec(spec)
        paths = RunPaths(spec.run_dir)
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.status.unlink(missing_ok=True)  # a stale status must not outlive a rerun
        t0 = time.perf_counter()
        create_training_job(self.sm, job)
        base = {
            "model": spec.name, "kind": spec.model.kind, "seed": spec.seed,
            "backend": self.name, "device": job.instance_type, "run_dir": spec.run_dir,
            "job_name": job.job_name,
        }  # fmt: skip
        try:
            description = wait_for_job(
                self.sm, job.job_name, poll_s=self.cfg.poll_s, max_poll_s=self.cfg.max_poll_s,
                should_cancel=should_cancel, on_transition=on_transition,
            )  # fmt: skip
        except (JobFailed, JobStopped) as exc:
            # a failed job uploads no output: its container's log is in CloudWatch only
            hint = f" (its log: streamguard aws logs {job.job_name})" if isinstance(
                exc, JobFailed) else ""  # fmt: skip
            failed = RunStatus(
                **base, status="failed", error=f"{type(exc).__name__}: {exc}{hint}",
                wall_s=round(time.perf_counter() - t0, 2),
                cost=job_cost(exc.description, self.cfg.prices) if exc.description else None,
                secondary_status=_transitions(exc.description),
            )  # fmt: skip
            failed.write()
            return failed
        artifacts = description["ModelArtifacts"]["S3ModelArtifacts"]
        download_model(self.s3, artifacts, paths.root)
        download_output(self.s3, artifacts, paths.root)  # training.log, when there is one
        _localise_exp_config(spec)
        container = read_run_status(paths.root)  # completed | collapsed, from the container
        if container is None:
            container = RunStatus(
                **base, status="failed", error="the job's model.tar.gz holds no readable "
                "run_status.json (an image older than this code?)",
            )  # fmt: skip
        status = container.model_copy(
            update={
                **base,
                "wall_s": round(time.perf_counter() - t0, 2),
                "cost": job_cost(description, self.cfg.prices),
                "secondary_status": _transitions(description),
            }
        )
        status.write()
        log.info("%s seed %d on SageMaker: %s", spec.name, spec.seed, status.status)
        return status


_CONFORMS: type[TrainingBackend] = SageMakerBackend  # mypy (make lint) checks the interface
