"""``scan-repository``: score a source tree or a git change with the production model.

One task scans (tree-sitter functions -> the registry's production model, or ``model_dir``)
and writes ``<output_dir>/<flow run name>/``: ``results.sarif`` (upload it to a code-scanning
tool), ``findings.jsonl`` and ``scan_summary.json``; a second publishes the top findings as a
table artifact and the counts and skip reasons as markdown. With ``fail_on`` set, the run ends
Failed when a function scores at or above it (after the files and artifacts are written), so a
CI job or an automation can act on it. Run it with the embedded, ephemeral Prefect::

    python -m flows.scan src/ --registry runs/registry
    python -m flows.scan --git-diff origin/main..HEAD --repo . --model-dir M --fail-on 0.9
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from streamguard_core.config import ScanConfig, ScanRepositoryConfig
from tasks.scan import publish_scan, run_dir, scan_task


class ScanGateFailed(RuntimeError):
    """A function scored at or above ``fail_on``."""


@flow(name="scan-repository", log_prints=True)
def scan_repository(config: ScanRepositoryConfig = ScanRepositoryConfig()) -> dict[str, Any]:  # noqa: B008
    """Scan ``config.paths`` (or ``config.git_diff``); returns the scan summary.

    Raises:
        ScanGateFailed: ``config.fail_on`` is set and a function scored at or above it.
    """
    out_dir = run_dir(config.output_dir, flow_run.get_name())
    summary = scan_task(config, out_dir)
    publish_scan(summary, config.top)
    if summary["gate_failed"]:
        worst = summary["top_findings"][0]
        raise ScanGateFailed(
            f"{worst['file']}:{worst['start_line']} {worst['function']} scored "
            f"{worst['probability']:.4f} >= fail_on {config.fail_on} (SARIF: {summary['sarif']})"
        )
    return summary


def config_from_args(argv: list[str] | None = None) -> ScanRepositoryConfig:
    """The :class:`ScanRepositoryConfig` a command line describes."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.scan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = ScanRepositoryConfig()
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files and directories")
    parser.add_argument("--git-diff", default=None, metavar="RANGE")
    parser.add_argument("--repo", default=defaults.repo)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--registry", default=defaults.registry)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--fail-on", type=float, default=None)
    parser.add_argument("--output-dir", default=defaults.output_dir)
    parser.add_argument("--top", type=int, default=defaults.top)
    parser.add_argument(
        "--explain", choices=("flagged", "all", "none"), default=ScanConfig().explain
    )
    parser.add_argument("--no-onnx", action="store_true", help="score with torch only")
    args = parser.parse_args(argv)
    return ScanRepositoryConfig(
        paths=args.paths or ([] if args.git_diff else ["."]),
        git_diff=args.git_diff,
        repo=args.repo,
        model_dir=args.model_dir,
        registry=args.registry,
        threshold=args.threshold,
        fail_on=args.fail_on,
        output_dir=args.output_dir,
        top=args.top,
        scan=ScanConfig(explain=args.explain, use_onnx=not args.no_onnx),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.scan``; 1 when the run fails (a failed gate included)."""
    from flows.presets import exit_status

    config = config_from_args(argv)
    state = scan_repository(config, return_state=True)
    if exit_status(state, "scan-repository"):
        return 1
    result = state.result()
    print(json.dumps({k: result[k] for k in ("files", "functions", "flagged", "sarif")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
