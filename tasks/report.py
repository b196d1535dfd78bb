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

from tasks.events import MODEL_BELOW_THRESHOLD, PIPELINE_COMPLETED, emit


@task(name="publish-results", retries=3, retry_delay_seconds=[2, 5, 15])
def publish_results(summary: dict[str, Any], min_mean_f1: float) -> dict[str, Any]:
    """Per-seed table, the report as markdown, links to the output files; alert events.

    Returns the artifact ids by key.
    """
    from streamguard_core.pipeline.report import report_table_rows

    ids: dict[str, Any] = {}
    ids["production-summary"] = create_table_artifact(
        key="production-summary",
        table=report_table_rows(summary),
        description="Per model x seed metrics of the production run",
    )
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
    best, best_f1 = summary.get("best_overall_model"), summary.get("best_overall_f1")
    if best is None or best_f1 is None or best_f1 < min_mean_f1:
        emit(
            MODEL_BELOW_THRESHOLD,
            {
                "model": best,
                "mean_f1": best_f1,
                "threshold": min_mean_f1,
                "per_model": {m: s["metrics"]["f1"]["mean"] for m, s in summary["models"].items()},
            },
        )
    emit(
        PIPELINE_COMPLETED,
        {"best_model": best, "best_f1": best_f1, "passed": summary["success"]["passed"],
         "report": str(report_path)},
    )  # fmt: skip
    return {k: str(v) for k, v in ids.items()}
