"""Scan tasks: one job (model -> scan -> SARIF + JSON Lines), and the findings in the UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from streamguard_core.config import ScanRepositoryConfig
from streamguard_core.scan.job import run_scan_job


@task(name="scan-code", task_run_name="scan {config.paths} {config.git_diff}")
def scan_task(config: ScanRepositoryConfig, out_dir: str) -> dict[str, Any]:
    """Scan and write the SARIF, JSON Lines and summary files; returns the summary."""
    summary = run_scan_job(config, out_dir)
    print(
        f"{summary['files']:,} files, {summary['functions']:,} functions, "
        f"{summary['flagged']:,} flagged (threshold {summary['threshold']:.4f}), "
        f"{len(summary['skipped']):,} skipped -> {summary['sarif']}"
    )
    return summary


def _lines(finding: dict[str, Any]) -> str:
    return ",".join(str(line["line"]) for line in finding.get("lines", []))


@task(name="publish-scan")
def publish_scan(summary: dict[str, Any], top: int) -> None:
    """A table artifact of the top findings and a markdown of the counts and skip reasons."""
    rows = [
        {
            "probability": round(f["probability"], 4),
            "flagged": f["flagged"],
            "location": f"{f['file']}:{f['start_line']}-{f['end_line']}",
            "function": f["function"],
            "lines": _lines(f),
        }
        for f in summary["top_findings"][:top]
    ]
    create_table_artifact(
        key="scan-top-findings",
        table=rows,
        description=f"The {len(rows)} highest-scored functions (model {summary['model_dir']})",
    )
    lines = [
        f"# Scan of {summary['files']:,} files"
        + (f" (change `{summary['git_diff']}`)" if summary["git_diff"] else ""),
        "",
        f"- **{summary['flagged']:,}** of {summary['functions']:,} functions flagged at "
        f"threshold {summary['threshold']:.4f} (model `{summary['model_dir']}`)",
        f"- SARIF: `{summary['sarif']}`; every function: `{summary['findings_file']}`",
        f"- {summary['parse_error_files']:,} files parsed with errors (their functions are "
        "still scored)",
    ]
    if summary["functions_outside_diff"]:
        lines.append(f"- {summary['functions_outside_diff']:,} functions outside the change")
    for reason, count in summary["skipped_by_reason"].items():
        lines.append(f"- skipped, {reason}: {count:,}")
    if summary["fail_on"] is not None:
        verdict = "FAILED" if summary["gate_failed"] else "passed"
        lines.append(f"- gate at {summary['fail_on']}: **{verdict}**")
    create_markdown_artifact(key="scan-summary", markdown="\n".join(lines))


def run_dir(output_dir: str, run_name: str | None) -> str:
    """``<output_dir>/<flow run name>`` (``scan`` outside a flow run)."""
    return str(Path(output_dir) / (run_name or "scan"))
