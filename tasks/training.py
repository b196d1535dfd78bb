"""Training tasks: preflight, one model x seed run, aggregation and the report.

Thin wrappers: each unpacks its arguments, calls one core function and returns a small dict.
Training is compute (no retries) and cached on the data's content plus the run settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.exceptions import MissingContextError

from streamguard_core.pipeline.config import ModelKind, SuccessCriteria, TrainingPlan
from streamguard_core.pipeline.runner import train_one
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


@task(name="preflight", task_run_name="preflight {models}")
def preflight_task(
    data_dir: str,
    models: list[str],
    plan: TrainingPlan,
    max_seq_len: int,
    output: str,
    device: str | None = None,
) -> dict[str, Any]:
    """Go/no-go checks (device, data, smoke overfit, memory, LR cache, disk).

    Raises:
        PreflightNoGo: a check failed; the report at ``output`` says which and why.
    """
    from streamguard_core.training.preflight import run_preflight

    logger = _logger()
    report = run_preflight(
        data_dir,
        models,
        batch_size=plan.batch_size,
        max_seq_len=max_seq_len,
        hidden_dims={"gnn": plan.gnn_hidden_dim, "transformer": plan.transformer_hidden_dim},
        device=device,
        output=output,
        num_threads=plan.num_threads,
        overfit_steps=100,
        echo=logger.info,
    )
    if not report["go"]:
        failed = [c for c in report.get("checks", []) if c.get("status") == "fail"]
        reasons = "; ".join(f"{c['name']}: {c['detail']}" for c in failed) or "see report"
        emit(PREFLIGHT_FAILED, {"reasons": reasons, "report": output})
        raise PreflightNoGo(f"preflight no-go: {reasons} (report: {output})")
    return {"go": True, "report": output}


@task(
    name="train-model",
    task_run_name="train {model} seed {seed}",
    cache_policy=TRAINING_CACHE,
    persist_result=True,
)
def train_model_task(
    model: ModelKind,
    seed: int,
    data_dir: str,
    output_root: str,
    plan: TrainingPlan,
    device: str | None = None,
) -> dict[str, Any]:
    """Train one model with one seed; a per-epoch progress artifact shows how far it is.

    Raises:
        SeedRunFailed: the run collapsed or failed (after writing run_status.json; the flow
            goes on with the other seeds and the aggregate reports this one).
    """
    logger = _logger()
    progress_id = None
    if model != "baseline":
        progress_id = create_progress_artifact(
            progress=0.0,
            key=f"training-progress-{model}-seed-{seed}",
            description=f"{model} seed {seed}: epochs done out of {plan.epochs}",
        )

    def on_epoch_end(row: dict[str, Any]) -> None:
        logger.info(
            "%s seed %d epoch %d/%d: train loss %s, valid F1 %.4f, ROC-AUC %s (%.1f s)",
            model, seed, row["epoch"] + 1, row["epochs"], _fmt(row["train_loss"]),
            row["valid_f1"], _fmt(row["valid_roc_auc"]), row["seconds"],
        )  # fmt: skip
        if progress_id is not None:
            update_progress_artifact(
                progress_id, min(100.0, 100.0 * (row["epoch"] + 1) / row["epochs"])
            )

    status = train_one(model, seed, data_dir, output_root, plan, device, on_epoch_end)
    if progress_id is not None and status["status"] == "completed":
        update_progress_artifact(progress_id, 100.0)
    if status["status"] == "collapsed":
        emit(TRAINING_COLLAPSED, {"model": model, "seed": seed, "reason": status["error"],
                                  "run_dir": status["run_dir"]})  # fmt: skip
    if status["status"] != "completed":
        raise SeedRunFailed(f"{model} seed {seed} {status['status']}: {status['error']}")
    logger.info("%s seed %d completed in %.1f s -> %s", model, seed, status["wall_s"],
                status["run_dir"])  # fmt: skip
    return status


@task(name="aggregate", task_run_name="aggregate {models}")
def aggregate_task(
    output_root: str, models: list[str], seeds: list[int], criteria: SuccessCriteria
) -> dict[str, Any]:
    """Per-model and overall ``production_summary.json`` plus ``production_report.md``."""
    from streamguard_core.pipeline.aggregate import aggregate_all
    from streamguard_core.pipeline.report import write_report

    summary = aggregate_all(output_root, models, criteria, seeds=seeds)
    report = write_report(summary, output_root)
    summary["report_path"] = str(report)
    summary["summary_path"] = str(
        Path(output_root) / "production_summary" / "production_summary.json"
    )
    return summary
