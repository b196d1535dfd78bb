"""``train-production``: every model x seed of the plan on a processed data set, then aggregate,
publish and judge.

Every run is one :class:`~streamguard_core.config.TrainJobSpec` from ``config.plan.jobs(...)``;
with ``plan.fusion`` also one per fused model x seed x fold (``plan.oof_jobs``: out-of-fold
predictions) and, after them, one fusion job per seed (``plan.fusion_jobs``). Then the
comparison stage (``streamguard compare``: CIs, paired tests, calibration, plots).
Locally each job runs in its own process; on a worker with several GPUs the jobs are spread
over them (one chain of jobs per GPU, the chains concurrent), on one GPU or a CPU they run one
after another. With ``backend: sagemaker`` every job is a SageMaker training job. A collapsed or
failed job never cancels the others: its ``run_status.json`` says why and the aggregate reports
it. When the success criteria fail, the flow run ends Failed naming the failed checks, after
the report and every artifact are published.

    python -m flows.train_production --data-dir runs/demo/data --preset quick [--models gnn]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from prefect import allow_failure, flow, get_run_logger
from prefect.futures import PrefectFuture, wait

from streamguard_core.backends.local import cpu_threads_per_job, local_devices
from streamguard_core.config import PipelineConfig, TrainJobSpec
from streamguard_core.evaluation.compare import comparison_text
from streamguard_core.pipeline.report import append_comparison
from streamguard_core.training.job import read_run_status
from tasks.evaluation import compare_task, publish_comparison
from tasks.report import SuccessCriteriaFailed, failure_message, publish_results
from tasks.training import aggregate_task, fold_summary_task, job_label, train_job_task


def stop_sagemaker_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation hook: stop this run's SageMaker jobs (``tasks.sagemaker.stop_jobs``).

    The pipeline and monthly-retrain flows have hooks of their own: a worker that cancels a
    deployment's run calls the hooks of the top-level flow only.
    """
    stop_jobs_under(flow_run, lambda config: config.output_root)


def stop_jobs_under(flow_run: Any, output_root: Callable[[PipelineConfig], str]) -> None:
    """Stop the SageMaker jobs of the run whose ``config`` parameter is in ``flow_run``, listed
    under ``output_root(config)`` (nothing when the backend is local)."""
    raw = (flow_run.parameters or {}).get("config")
    if raw is None:
        return
    config = PipelineConfig.model_validate(raw)
    if config.backend != "sagemaker" or config.sagemaker is None:
        return
    from tasks.sagemaker import stop_jobs

    stop_jobs(output_root(config), config.sagemaker, config.aws_credentials_block)


def run_local_jobs(specs: list[TrainJobSpec], cpu_jobs: int = 1, refresh: bool = False) -> None:
    """Every job through :func:`train_job_task`, one chain of jobs per device slot.

    One slot (a CPU or one GPU): the jobs run one after another. Several slots (GPUs, or
    ``cpu_jobs`` CPU slots sharing the cores' threads): job ``i`` goes to slot ``i % n`` and waits
    for the previous job on that slot, whatever its outcome, so each slot trains one job at a
    time and all slots train concurrently. Every job is a process of its own either way.
    """
    logger = get_run_logger()
    slots = local_devices(cpu_jobs, max((s.train.nproc_per_node for s in specs), default=1))
    threads = cpu_threads_per_job(len(slots)) if slots[0] is None else None
    logger.info("%d runs on %d slot(s): %s%s", len(specs), len(slots), slots,
                f", {threads} torch thread(s) each" if threads else "")  # fmt: skip
    # a cached result is only trusted while the run's files say it completed
    runs = [
        train_job_task.with_options(refresh_cache=refresh or _status(spec) != "completed")
        for spec in specs
    ]
    if len(slots) == 1:
        for run, spec in zip(runs, specs, strict=True):
            run(spec, slots[0], threads, return_state=True)
        return
    futures: list[PrefectFuture[Any]] = []
    for i, (run, spec) in enumerate(zip(runs, specs, strict=True)):
        before = [allow_failure(futures[i - len(slots)])] if i >= len(slots) else []
        futures.append(run.submit(spec, slots[i % len(slots)], threads, wait_for=before))
    wait(futures)


@flow(name="train-production", log_prints=True, on_cancellation=[stop_sagemaker_jobs])
def train_production(
    data_dir: str,
    config: PipelineConfig = PipelineConfig(),  # noqa: B008
) -> dict[str, Any]:
    """Train ``config.plan`` on the processed data set ``data_dir`` into ``config.output_root``;
    aggregate, publish the report, and judge it against ``config.criteria``
    (:func:`run_training` in a flow run of its own).

    Raises:
        SuccessCriteriaFailed: a check failed (the flow run ends Failed with every failed check
            in its message, after everything is published).
    """
    return run_training(data_dir, config)


def run_training(data_dir: str, config: PipelineConfig) -> dict[str, Any]:
    """The training stage inside the current flow run: every job of ``config.plan`` on
    ``data_dir``, then aggregate, publish and judge; returns the overall summary.

    ``streamguard-pipeline`` calls it directly rather than as the ``train-production`` subflow:
    its task runs, artifacts and events are the same, without the fixed cost of a flow run of
    its own (creating it, validating ``config`` again, its state changes and stopping its
    heartbeat thread, up to 1 s). Only ``plan``, ``criteria``, ``output_root``, ``backend`` and
    the SageMaker settings are read (``data`` and ``preprocessing`` made ``data_dir``).

    The artifacts are published while the next step runs (``publish-results`` beside the model
    comparison, ``publish-comparison`` beside the report's comparison section and the headline)
    and waited for before this goes on, so a publish that fails after its retries still fails
    the run, as it did when it ran in line.

    Raises:
        SuccessCriteriaFailed: a check failed (after everything is published).
    """
    logger = get_run_logger()
    plan = config.plan
    specs = plan.jobs(data_dir, config.output_root)
    if plan.fusion:
        fold_summary_task(data_dir, plan, config.output_root)
        specs += plan.oof_jobs(data_dir, config.output_root)
    if config.backend == "sagemaker":
        from tasks.sagemaker import run_sagemaker_jobs

        assert config.sagemaker is not None  # PipelineConfig's validator guarantees it
        run_sagemaker_jobs(data_dir, specs, config.output_root, config.sagemaker,
                           config.aws_credentials_block, config.s3_bucket_block)  # fmt: skip
    else:
        run_local_jobs(specs, config.local_parallel_jobs)
    fusion_specs = plan.fusion_jobs(data_dir, config.output_root)
    if fusion_specs:  # seconds each, on the worker whatever the backend; never from cache
        run_local_jobs(fusion_specs, 1, refresh=True)
    for spec in specs + fusion_specs:
        status = read_run_status(spec.run_dir)
        if status is None or status.status != "completed":
            logger.warning("%s: %s (%s)", job_label(spec),
                           status.status if status else "missing",
                           status.error if status else "no run_status.json")  # fmt: skip
    summary = aggregate_task(config.output_root, plan, config.criteria)
    # published while the comparison runs; `summary` is never changed after this point
    results_published = publish_results.submit(summary, config.criteria)
    compared = compare_task(config.output_root, plan.all_names, list(plan.seeds),
                            plan.train.target_precision, return_state=True)  # fmt: skip
    # raises what the publish raised after its retries; and it has read the report before the
    # comparison is appended to it
    results_published.result()
    comparison_published = None
    compared_paths: dict[str, Any] = {}
    if compared.is_completed():
        evaluation = compared.result()
        comparison_published = publish_comparison.submit(evaluation)
        append_comparison(summary["report_path"], evaluation)
        compared_paths["evaluation_path"] = evaluation.get("evaluation_path")
        print(comparison_text(evaluation))
    else:  # e.g. no model has a usable seed: the criteria below say why
        logger.error("model comparison failed: %s", compared.message)
    print(headline(summary))
    if comparison_published is not None:
        comparison_published.result()
    if not summary["success"]["passed"]:
        raise SuccessCriteriaFailed(failure_message(summary))
    return {**summary, **compared_paths}


def _status(spec: TrainJobSpec) -> str | None:
    status = read_run_status(spec.run_dir)
    return None if status is None else status.status


def headline(summary: dict[str, Any]) -> str:
    """The run's result as a few lines of text: per model the threshold objective, F1 with
    spread, accuracy at the tuned threshold and at 0.5 and ROC-AUC, each beside its trivial
    reference; the verdict with every failed check, and where the report is."""
    from streamguard_core.pipeline.aggregate import failed_check_lines
    from tasks.report import model_rows

    table = [
        ("model", "seeds", "objective", "mean F1", "std", "95% CI", "all-vuln F1", "accuracy",
         "acc@0.5", "majority acc", "ROC-AUC", "chance AUC"),
    ]  # fmt: skip
    for row in model_rows(summary):
        table.append(
            (row["model"], row["seeds"], row["threshold_objective"] or "n/a",
             _fmt(row["mean_f1"]), _fmt(row["f1_std"]), row["f1_ci95"] or "n/a",
             _fmt(row["all_vulnerable_f1"]), _fmt(row["mean_accuracy"]),
             _fmt(row["mean_accuracy_at_half"]), _fmt(row["majority_accuracy"]),
             _fmt(row["mean_roc_auc"]), _fmt(row["chance_roc_auc"]))
        )  # fmt: skip
    widths = [max(len(cells[i].strip()) for cells in table) for i in range(len(table[0]))]
    lines = [""] + [
        "  ".join(c.strip().ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in table
    ]
    lines.append(
        "(F1 and accuracy at the threshold tuned on valid for the objective; acc@0.5: the "
        "CodeXGLUE convention; all-vuln F1, majority acc, chance AUC: trivial references)"
    )
    passed = summary["success"]["passed"]
    lines += [
        f"best model: {summary['best_overall_model']} (mean "
        f"{summary['best_overall_selected_by']} {_fmt(summary['best_overall_value'])})",
        f"success criteria: {'PASSED' if passed else 'FAILED'}",
        *[f"  failed: {line}" for line in failed_check_lines(summary["success"])],
        f"summary: {summary['summary_path']}",
        f"report:  {summary['report_path']}",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "  n/a " if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.train_production``: train a preset's plan on a processed data set."""
    from flows.presets import exit_status, load_preset, override, preset_names

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="a processed data set")
    parser.add_argument("--preset", default="full", help=f"one of {preset_names()} or a YAML path")
    parser.add_argument("--output-root", default=None, help="default: the preset's")
    parser.add_argument("--models", default=None, help="comma-separated run names or kinds")
    parser.add_argument("--seeds", default=None, help="comma-separated, replaces the preset's")
    args = parser.parse_args(argv)
    config = override(
        load_preset(args.preset), models=args.models, seeds=args.seeds,
        output_root=args.output_root,
    )  # fmt: skip
    return exit_status(train_production(args.data_dir, config, return_state=True),
                       "train-production")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
