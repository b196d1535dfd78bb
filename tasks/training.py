"""Training tasks: preflight, one training job, aggregation and the report.

Thin wrappers: each unpacks its arguments, calls one core function and returns a small result.
Training is compute (no retries) and cached on the job spec plus the processed data's content.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.exceptions import MissingContextError

from streamguard_core.backends.local import LocalBackend
from streamguard_core.config import SuccessCriteria, TrainingPlan, TrainJobSpec
from streamguard_core.training.job import RunStatus
from tasks.caching import TRAINING_CACHE
from tasks.events import PREFLIGHT_FAILED, TRAINING_COLLAPSED, emit


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The task run's logger; a plain one when the body runs outside Prefect (``.fn()``)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("streamguard.tasks")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class PreflightNoGo(RuntimeError):
    """Preflight said no-go: the pipeline stops before any training."""


class SeedRunFailed(RuntimeError):
    """A model x seed run failed or collapsed (its run_status.json says why)."""


def progress_key(name: str, seed: int) -> str:
    """The progress artifact's key of one run (artifact keys allow ``a-z``, ``0-9`` and ``-``)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"training-progress-{name}-seed-{seed}".lower())


@task(name="preflight", task_run_name="preflight {plan.names}")
def preflight_task(data_dir: str, plan: TrainingPlan, output: str) -> dict[str, Any]:
    """Go/no-go checks of exactly the plan's models (device, data, overfit, memory, disk).

    Raises:
        PreflightNoGo: a check failed; the report at ``output`` says which and why.
    """
    from streamguard_core.training.preflight import run_preflight

    logger = _logger()
    report = run_preflight(data_dir, plan, output=output, echo=logger.info)
    if not report["go"]:
        failed = [c for c in report.get("checks", []) if c.get("status") == "fail"]
        reasons = "; ".join(f"{c['name']}: {c['detail']}" for c in failed) or "see report"
        emit(PREFLIGHT_FAILED, {"reasons": reasons, "report": output})
        raise PreflightNoGo(f"preflight no-go: {reasons} (report: {output})")
    return {"go": True, "report": output}


@task(
    name="train-job",
    task_run_name="train {spec.name} seed {spec.seed}",
    cache_policy=TRAINING_CACHE,
    persist_result=True,
)
def train_job_task(
    spec: TrainJobSpec, device: str | None = None, threads: int | None = None
) -> RunStatus:
    """Run one job in its own process (:class:`LocalBackend`); a per-epoch progress artifact
    shows how far it is.

    Raises:
        SeedRunFailed: the run collapsed or failed (after writing run_status.json; the flow
            goes on with the other jobs and the aggregate reports this one).
    """
    logger = _logger()
    name, seed = spec.name, spec.seed
    progress_id = None
    if spec.model.kind != "baseline":
        progress_id = create_progress_artifact(
            progress=0.0,
            key=progress_key(name, seed),
            description=f"{name} seed {seed}: epochs done out of {spec.train.epochs}",
        )

    def on_epoch_end(row: dict[str, Any]) -> None:
        logger.info(
            "%s seed %d epoch %d/%d: train loss %s, valid F1 %.4f, ROC-AUC %s (%.1f s)",
            name, seed, row["epoch"] + 1, row["epochs"], _fmt(row["train_loss"]),
            row["valid_f1"], _fmt(row["valid_roc_auc"]), row["seconds"],
        )  # fmt: skip
        if progress_id is not None:
            update_progress_artifact(
                progress_id, min(100.0, 100.0 * (row["epoch"] + 1) / row["epochs"])
            )

    status = LocalBackend().run(spec, on_epoch_end, device, threads)
    if progress_id is not None and status.status == "completed":
        update_progress_artifact(progress_id, 100.0)
    if status.status == "collapsed":
        emit(TRAINING_COLLAPSED, {"model": name, "seed": seed, "reason": status.error,
                                  "run_dir": status.run_dir})  # fmt: skip
    if status.status != "completed":
        raise SeedRunFailed(f"{name} seed {seed} {status.status}: {status.error}")
    logger.info("%s seed %d completed in %.1f s -> %s", name, seed, status.wall_s or 0.0,
                status.run_dir)  # fmt: skip
    return status


@task(name="aggregate", task_run_name="aggregate {plan.names}")
def aggregate_task(
    output_root: str, plan: TrainingPlan, criteria: SuccessCriteria
) -> dict[str, Any]:
    """Per-model and overall ``production_summary.json`` plus ``production_report.md``."""
    from streamguard_core.pipeline.aggregate import SUMMARY_DIR, SUMMARY_FILE, aggregate_all
    from streamguard_core.pipeline.report import write_report

    summary = aggregate_all(output_root, plan, criteria)
    summary["report_path"] = str(write_report(summary, output_root))
    summary["summary_path"] = str(Path(output_root) / SUMMARY_DIR / SUMMARY_FILE)
    return summary
