"""Training tasks: preflight, one training job, aggregation and the report.

Thin wrappers: each unpacks its arguments, calls one core function and returns a small result.
Training is compute (no retries) and cached on the job spec plus the processed data's content.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.exceptions import MissingContextError

from streamguard_core.backends.local import LocalBackend
from streamguard_core.config import NEURAL_KINDS, SuccessCriteria, TrainingPlan, TrainJobSpec
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


class RunProgress:
    """One run's progress artifact, created and updated on a thread of its own.

    The job never waits on the API for it: the artifact is created while the job's process
    starts, and each update is sent while the job goes on (one call at a time, in order).
    :meth:`close` waits for the calls and raises what one of them raised.
    """

    def __init__(self, key: str, description: str) -> None:
        self._calls = ThreadPoolExecutor(1, thread_name_prefix=f"progress-{key}")
        self._sent = 0.0
        self._artifact_id = self._call(
            create_progress_artifact, progress=0.0, key=key, description=description
        )

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        # the task run's context (client, run ids) goes along, so the artifact is the run's
        return self._calls.submit(contextvars.copy_context().run, fn, *args, **kwargs)

    def _update(self, percent: float) -> None:
        update_progress_artifact(self._artifact_id.result(), percent)

    def update(self, percent: float) -> None:
        """Set the progress to ``percent`` (capped at 100; unchanged values are not sent)."""
        percent = min(100.0, percent)
        if percent != self._sent:
            self._sent = percent
            self._call(self._update, percent)

    def close(self, final: float | None = None) -> None:
        """Set ``final`` (if given), then wait for every call; raises the first call's error."""
        if final is not None:
            self.update(final)
        self._calls.shutdown(wait=True)
        self._artifact_id.result()


def progress_key(name: str, seed: int, fold: int | None = None) -> str:
    """The progress artifact's key of one run (artifact keys allow ``a-z``, ``0-9`` and ``-``)."""
    text = f"training-progress-{name}-seed-{seed}" + (f"-fold-{fold}" if fold is not None else "")
    return re.sub(r"[^a-z0-9-]+", "-", text.lower())


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


def job_label(spec: TrainJobSpec) -> str:
    """``gnn seed 42`` or ``gnn seed 42 fold 3/5``: how logs and the UI name one job."""
    fold = f" fold {spec.fold.index}/{spec.fold.count}" if spec.fold else ""
    return f"{spec.name} seed {spec.seed}{fold}"


def _task_run_name() -> str:
    from prefect.runtime import task_run

    return f"train {job_label(task_run.parameters['spec'])}"


@task(
    name="train-job",
    task_run_name=_task_run_name,
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
    name, seed, label = spec.name, spec.seed, job_label(spec)
    progress = None
    if spec.model.kind in NEURAL_KINDS:
        progress = RunProgress(
            key=progress_key(name, seed, spec.fold.index if spec.fold else None),
            description=f"{label}: epochs done out of {spec.train.epochs}",
        )

    def on_epoch_end(row: dict[str, Any]) -> None:
        logger.info(
            "%s epoch %d/%d: train loss %s, valid F1 %.4f, ROC-AUC %s (%.1f s)",
            label, row["epoch"] + 1, row["epochs"], _fmt(row["train_loss"]),
            row["valid_f1"], _fmt(row["valid_roc_auc"]), row["seconds"],
        )  # fmt: skip
        if progress is not None:
            progress.update(100.0 * (row["epoch"] + 1) / row["epochs"])

    status = LocalBackend().run(spec, on_epoch_end, device, threads)
    if progress is not None:  # 100% when it completed (early stopping ends before the last epoch)
        progress.close(100.0 if status.status == "completed" else None)
    if status.status == "collapsed":
        emit(TRAINING_COLLAPSED, {"model": name, "seed": seed, "reason": status.error,
                                  "run_dir": status.run_dir,
                                  "fold": spec.fold.index if spec.fold else None})  # fmt: skip
    if status.status != "completed":
        raise SeedRunFailed(f"{label} {status.status}: {status.error}")
    logger.info("%s completed in %.1f s -> %s", label, status.wall_s or 0.0,
                status.run_dir)  # fmt: skip
    return status


@task(name="aggregate", task_run_name="aggregate {plan.all_names}")
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


@task(name="folds", task_run_name="folds ({plan.n_folds})")
def fold_summary_task(data_dir: str, plan: TrainingPlan, output_root: str) -> list[dict[str, int]]:
    """Check that train cuts into ``plan.n_folds`` folds (before any fold job starts), write
    ``<output_root>/oof/folds.json`` and publish the per-fold counts as a table artifact.

    Raises:
        FoldError: too few functions of a label for the folds, or a one-class fold.
    """
    from prefect.artifacts import create_table_artifact

    from streamguard_core.io import atomic_write_json
    from streamguard_core.preprocess.dataset import ProcessedDataset
    from streamguard_core.training.folds import assign_folds, fold_counts

    train = ProcessedDataset(data_dir).split("train")
    folds = assign_folds(train.records, train.labels, plan.n_folds, plan.fold_seed)
    counts = fold_counts(folds, train.labels)
    out = Path(output_root) / "oof" / "folds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"n_folds": plan.n_folds, "seed": plan.fold_seed, "folds": counts,
                            "fused_models": plan.fused_names})  # fmt: skip
    create_table_artifact(
        key="oof-folds", table=counts,
        description=f"{plan.n_folds} folds of train for the out-of-fold predictions of "
        f"{', '.join(plan.fused_names)} (near-duplicate groups kept together)",
    )  # fmt: skip
    _logger().info("folds: %s", counts)
    return counts
