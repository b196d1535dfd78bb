"""One scan as a job: resolve the model, scan, write SARIF + JSON Lines + a summary.

The ``scan-repository`` Prefect flow calls :func:`run_scan_job` through one task; the files it
writes under ``out_dir``::

    results.sarif      SARIF 2.1.0: one result per flagged function, its top lines as
                       relatedLocations, skipped files as tool notifications
    findings.jsonl     every scored function (sorted by probability), then {"summary": ...}
    scan_summary.json  counts, threshold, model, the paths above and the top findings
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamguard_core.config import ScanRepositoryConfig
from streamguard_core.io import atomic_write_json

SARIF_FILE = "results.sarif"
FINDINGS_FILE = "findings.jsonl"
SUMMARY_FILE = "scan_summary.json"


def run_scan_job(config: ScanRepositoryConfig, out_dir: str | Path) -> dict[str, Any]:
    """Scan what ``config`` names and write :data:`SARIF_FILE`, :data:`FINDINGS_FILE` and
    :data:`SUMMARY_FILE` into ``out_dir``; returns the summary.

    The summary holds ``gate_failed`` (a finding at or above ``config.fail_on``) but raises
    nothing for it: the caller decides what a failed gate means.

    Raises:
        ValueError: no model (neither ``model_dir`` nor a production model in ``registry``).
        ScanError: a bad revision range or a ``repo`` that is not a git work tree.
    """
    from streamguard_core.scan.cli import resolve_model_dir
    from streamguard_core.scan.run import scan, write_jsonl
    from streamguard_core.scan.sarif import write_sarif

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(config.model_dir, None if config.model_dir else config.registry)
    repo = Path(config.repo).resolve()
    if config.git_diff is not None:  # git reads diff-limiting paths relative to the repository
        paths = [str((repo / p).resolve()) for p in config.paths]
    else:
        paths = list(config.paths)
    s = config.scan
    result = scan(
        paths,
        model_dir,
        git_diff=config.git_diff,
        repo=repo,
        threshold=config.threshold,
        batch_size=s.batch_size,
        max_function_lines=s.max_function_lines,
        max_file_bytes=s.max_file_bytes,
        explain=s.explain,
        top_lines=s.top_lines,
        ig_steps=s.ig_steps,
        use_onnx=s.use_onnx,
        workers=s.workers,
    )
    base_dir = repo if config.git_diff is not None else Path.cwd()
    write_sarif(result, out / SARIF_FILE, base_dir=base_dir)
    write_jsonl(result, out / FINDINGS_FILE)
    gate = config.fail_on
    summary = {
        **result.summary(),
        "sarif": str(out / SARIF_FILE),
        "findings_file": str(out / FINDINGS_FILE),
        "git_diff": config.git_diff,
        "fail_on": gate,
        "gate_failed": gate is not None and any(f.probability >= gate for f in result.findings),
        "top_findings": [asdict(f) for f in result.findings[: config.top]],
    }
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary
