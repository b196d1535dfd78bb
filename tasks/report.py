"""Publishing at the edge: the aggregate as Prefect artifacts and alert events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from streamguard_core.config import SuccessCriteria
from tasks.events import MODEL_BELOW_THRESHOLD, PIPELINE_COMPLETED, emit


class SuccessCriteriaFailed(RuntimeError):
    """The run's success criteria failed (its report and artifacts are published first)."""


def failed_checks(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The success checks that did not pass, in the summary's order."""
    return [c for c in summary["success"]["checks"] if not c["passed"]]


def failure_message(summary: dict[str, Any]) -> str:
    """The flow run's state message when the criteria fail: every failed check, named."""
    from streamguard_core.pipeline.aggregate import failed_check_lines

    failed = "; ".join(failed_check_lines(summary["success"]))
    return f"success criteria failed: {failed} (report: {summary.get('report_path')})"


def model_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model: the threshold objective, mean F1 with spread and CI, accuracy at the
    tuned threshold and at 0.5, ROC-AUC, each beside its trivial reference, and its verdict."""
    failed_by_model: dict[str | None, list[str]] = {}
    for check in failed_checks(summary):
        failed_by_model.setdefault(check.get("model"), []).append(check["name"])
    judged = set(summary["success"].get("judged_models", []))
    rows = []
    for name, model in summary["models"].items():
        metrics = model["metrics"]
        f1, accuracy, roc_auc = metrics["f1"], metrics["accuracy"], metrics["roc_auc"]
        trivial = model.get("trivial") or {}
        rows.append(
            {
                "model": name,
                "kind": model.get("kind"),
                "seeds": f"{model['n_completed']}/{model['n_seeds']}",
                "threshold_objective": model.get("threshold_objective"),
                "mean_f1": f1["mean"],
                "f1_std": f1["std"],
                "f1_ci95": None
                if f1["ci95_low"] is None
                else f"[{f1['ci95_low']:.4f}, {f1['ci95_high']:.4f}]",
                "all_vulnerable_f1": trivial.get("all_vulnerable_f1"),
                "mean_accuracy": accuracy["mean"],
                "mean_accuracy_at_half": (metrics.get("accuracy_at_half") or {}).get("mean"),
                "majority_accuracy": trivial.get("majority_accuracy"),
                "mean_roc_auc": roc_auc["mean"],
                "chance_roc_auc": roc_auc.get("trivial"),
                "criteria": _verdict(name, judged, failed_by_model),
            }
        )
    return rows


@task(name="publish-results", retries=3, retry_delay_seconds=[2, 5, 15])
def publish_results(summary: dict[str, Any], criteria: SuccessCriteria) -> dict[str, Any]:
    """Per-seed, per-model and per-check tables, the report as markdown, links to the output
    files; a ``streamguard.model.below_threshold`` event per model that failed its checks.

    Returns the artifact ids by key.
    """
    from streamguard_core.pipeline.report import report_table_rows

    ids: dict[str, Any] = {}
    ids["production-summary"] = create_table_artifact(
        key="production-summary",
        table=report_table_rows(summary),
        description="Per model x seed metrics of the production run",
    )
    ids["production-models"] = create_table_artifact(
        key="production-models",
        table=model_rows(summary),
        description="Per model: the threshold objective; mean F1 over seeds (std and 95% CI are "
        "n/a with one seed), accuracy at the tuned threshold and at 0.5 and ROC-AUC, each beside "
        "its trivial reference on the same split; and the model's success criteria",
    )
    ids["production-checks"] = create_table_artifact(
        key="production-checks",
        table=[
            {"model": c.get("model"), "check": c["name"], "passed": c["passed"],
             "value": _cell(c.get("value")), "threshold": _cell(c.get("threshold")),
             "detail": c.get("detail")}
            for c in summary["success"]["checks"]
        ],
        description="Success criteria, one row per check (model: None = the whole run)",
    )  # fmt: skip
    report_path = Path(summary["report_path"])
    # the plots are PNG files beside the report on the worker's disk (the UI cannot load them)
    markdown = (
        f"> Report file `{report_path}`; its plots are the PNG files in that folder.\n\n"
        + report_path.read_text()
    )
    ids["production-report"] = create_markdown_artifact(
        key="production-report", markdown=markdown, description=str(report_path)
    )
    for key, path, text in (
        ("production-report-file", report_path, "production_report.md"),
        ("production-summary-file", Path(summary["summary_path"]), "production_summary.json"),
    ):
        ids[key] = create_link_artifact(
            key=key, link=path.resolve().as_uri(), link_text=text, description=str(path)
        )
    for payload in below_threshold_payloads(summary, criteria):
        emit(MODEL_BELOW_THRESHOLD, payload)
    best, best_f1 = summary.get("best_overall_model"), summary.get("best_overall_f1")
    emit(
        PIPELINE_COMPLETED,
        {"best_model": best, "best_f1": best_f1, "passed": summary["success"]["passed"],
         "report": str(report_path)},
    )  # fmt: skip
    return {k: str(v) for k, v in ids.items()}


def below_threshold_payloads(
    summary: dict[str, Any], criteria: SuccessCriteria
) -> list[dict[str, Any]]:
    """One alert payload per model whose own checks failed (one with model None when no model
    completed at all)."""
    per_model = {m: s["metrics"]["f1"]["mean"] for m, s in summary["models"].items()}
    failed: dict[str, list[dict[str, Any]]] = {}
    for check in failed_checks(summary):
        if check.get("model"):
            failed.setdefault(check["model"], []).append(check)
    payloads = [
        {
            "model": model,
            "mean_f1": per_model.get(model),
            "threshold": criteria.min_mean_f1,
            "reason": "; ".join(f"{c['name']}: {c['detail']}" for c in checks),
            "per_model": per_model,
        }
        for model, checks in failed.items()
    ]
    if summary.get("best_overall_model") is None and not payloads:
        payloads.append(
            {"model": None, "mean_f1": None, "threshold": criteria.min_mean_f1,
             "reason": "no model completed a seed", "per_model": per_model}
        )  # fmt: skip
    return payloads


def _verdict(name: str, judged: set[str], failed: dict[str | None, list[str]]) -> str:
    """A model's criteria verdict: not judged (e.g. the baseline), passed, or its failed checks."""
    if name not in judged:
        return "not judged"
    return f"FAILED: {', '.join(failed[name])}" if name in failed else "passed"


def _cell(value: Any) -> Any:
    """A table cell: numbers and text as they are, anything else as its text."""
    return value if value is None or isinstance(value, int | float | str) else str(value)
