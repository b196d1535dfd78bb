"""One model x seed of a production run as a SageMaker job, ending in the same seed directory a
local run writes (``<root>/<model>/seed_<n>/`` with ``run_status.json``), plus its cost.

The Prefect task around :func:`run_sagemaker_seed` only resolves credentials and retries I/O;
everything else (spec, submit, wait, download, cost, status) is here and runs without Prefect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamguard_core.aws.config import SageMakerConfig, TrainHyperparameters
from streamguard_core.aws.jobs import (
    JobFailed,
    JobStopped,
    SageMakerJobSpec,
    budget_check,
    checkpoint_s3_uri,
    create_training_job,
    download_model,
    job_cost,
    job_name_for,
    wait_for_job,
)
from streamguard_core.io import atomic_write_json
from streamguard_core.pipeline.config import TrainingPlan
from streamguard_core.pipeline.runner import RUN_STATUS, read_run_status, seed_dir

log = logging.getLogger("streamguard.aws.backend")


def hyperparameters_for(
    model: str, seed: int, plan: TrainingPlan, max_seq_len: int
) -> TrainHyperparameters:
    """The job's hyperparameters: the plan's settings for ``model`` and ``seed``."""
    hidden = {"gnn": plan.gnn_hidden_dim, "transformer": plan.transformer_hidden_dim}.get(model)
    layers = {"gnn": plan.gnn_layers, "transformer": plan.transformer_layers}.get(model)
    return TrainHyperparameters(
        model=model,
        seed=seed,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        lr=plan.lr,
        max_steps_per_epoch=plan.max_steps_per_epoch,
        hidden_dim=hidden,
        num_layers=layers,
        transformer_model=plan.transformer_model,
        max_seq_len=max_seq_len,
        num_threads=plan.num_threads,
        mixed_precision=plan.mixed_precision,
        early_stopping_patience=plan.early_stopping_patience,
    )


def job_spec(
    cfg: SageMakerConfig, run_id: str, model: str, seed: int, data_uri: str,
    hyper: TrainHyperparameters,
) -> SageMakerJobSpec:  # fmt: skip
    """The CreateTrainingJob spec of one model x seed (its own checkpoint prefix)."""
    return SageMakerJobSpec(
        job_name=job_name_for(run_id, model, seed),
        image_uri=cfg.image_uri,
        role_arn=cfg.role_arn,
        instance_type=cfg.instance_type,
        instance_count=cfg.instance_count,
        volume_size_gb=cfg.volume_size_gb,
        max_runtime_s=cfg.max_runtime_s,
        max_wait_s=cfg.effective_max_wait_s,
        use_spot=cfg.use_spot,
        hyperparameters=hyper.to_sagemaker(),
        input_s3_uri=data_uri,
        output_s3_path=f"s3://{cfg.bucket}/{cfg.prefix.strip('/')}/output/{run_id}/",
        checkpoint_s3_uri=checkpoint_s3_uri(cfg.bucket, cfg.prefix, run_id, model, seed),
        tags={"streamguard:model": model, "streamguard:seed": str(seed), **cfg.tags},
    )


def check_budget(cfg: SageMakerConfig, n_jobs: int) -> float:
    """Worst-case cost of ``n_jobs`` jobs; raises ``BudgetExceeded`` above ``cfg.budget_usd``."""
    limit = cfg.effective_max_wait_s or cfg.max_runtime_s
    return budget_check(limit, cfg.price_per_hour(), n_jobs, cfg.budget_usd, cfg.instance_count)


def run_sagemaker_seed(
    sm: Any,
    s3: Any,
    cfg: SageMakerConfig,
    spec: SageMakerJobSpec,
    output_root: str | Path,
    model: str,
    seed: int,
    should_cancel: Callable[[], bool] | None = None,
    on_transition: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Submit (or find) the job, wait, download its files into the seed dir; returns the status.

    A failed or stopped job is a ``failed`` status with SageMaker's reason (never raised), so one
    job cannot stop the others. I/O errors (network, throttling) do raise: the caller retries,
    and a retried call finds the job it already created by its deterministic name.
    """
    run_dir = seed_dir(output_root, model, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    create_training_job(sm, spec)
    base: dict[str, Any] = {
        "model": model, "seed": seed, "backend": "sagemaker", "run_dir": str(run_dir),
        "job_name": spec.job_name, "device": spec.instance_type,
    }  # fmt: skip
    try:
        description = wait_for_job(
            sm, spec.job_name, poll_s=cfg.poll_s, max_poll_s=cfg.max_poll_s,
            should_cancel=should_cancel, on_transition=on_transition,
        )  # fmt: skip
    except (JobFailed, JobStopped) as exc:
        status = {
            **base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
            "wall_s": round(time.perf_counter() - t0, 2),
            "cost": job_cost(exc.description or {}, cfg.prices) if exc.description else None,
        }  # fmt: skip
        atomic_write_json(run_dir / RUN_STATUS, status)
        return status
    download_model(s3, description["ModelArtifacts"]["S3ModelArtifacts"], run_dir)
    # the container's own status (completed | collapsed) plus what only the job knows
    status = {
        **(read_run_status(run_dir) or {"status": "failed", "error": "no run_status.json in "
                                        "model.tar.gz"}),
        **base,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cost": job_cost(description, cfg.prices),
        "secondary_status": [t.get("Status") for t in description.get(
            "SecondaryStatusTransitions") or []],
    }  # fmt: skip
    atomic_write_json(run_dir / RUN_STATUS, status)
    return status
