"""``streamguard scan``: score the C/C++ functions of your own code with a saved detector."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FINDING, EXIT_USAGE = 0, 1, 2
DESCRIPTION = """\
Find every C/C++ function (tree-sitter) in files, directories or the lines a git change
touches, score it with a saved detector, and print the findings sorted by probability.
Directories are read recursively; inside a git work tree .gitignore is respected. Binary,
unreadable, oversized and non-C/C++ files, symlink loops and over-long functions are skipped
and listed with their reason at the end (table), in the final {"summary": ...} line (jsonl) or
as tool notifications (sarif). Flagged functions get their most relevant lines (--explain).

  streamguard scan src/ --model-dir runs/baseline/seed_42/model
  streamguard scan . --registry runs/registry --top 20          # the production model
  streamguard scan --git-diff origin/main..HEAD --repo . --registry runs/registry --fail-on 0.9
  streamguard scan lib/ --model-dir M --format jsonl --output findings.jsonl --explain all
  streamguard scan . --registry runs/registry --format sarif --output results.sarif
      # SARIF 2.1.0 for GitHub code scanning (github/codeql-action/upload-sarif); paths in
      # it are relative to --base-dir (default: --repo with --git-diff, else the current dir)

Exit codes: 0 no finding at or above --fail-on (or no --fail-on), 1 a finding at or above
--fail-on, 2 a usage error (no model, an unknown revision range, bad flags).
"""


def _probability(text: str) -> float:
    """An argparse type: a probability in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _scan_field(name: str) -> Any:
    """An argparse type: an integer checked against ``ScanConfig.<name>``'s bounds."""
    from pydantic import ValidationError

    from streamguard_core.config import ScanConfig

    def parse(text: str) -> int:
        try:
            value = int(text)
            ScanConfig.model_validate({name: value})
        except ValueError as exc:  # ValidationError is a ValueError
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise argparse.ArgumentTypeError(f"{text}: {reason}") from None
        return value

    parse.__name__ = name  # argparse names the type in its "invalid ... value" message
    return parse


def _field_help(name: str) -> str:
    """``ScanConfig.<name>``'s description, with argparse's default placeholder."""
    from streamguard_core.config import ScanConfig

    return f"{ScanConfig.model_fields[name].description} (default: %(default)s)"


def add_scan_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``streamguard scan``."""
    from typing import get_args

    from streamguard_core.config import ScanConfig
    from streamguard_core.scan.discover import MAX_FILE_BYTES
    from streamguard_core.scan.run import (
        BATCH_SIZE,
        EXPLAIN,
        IG_STEPS,
        MAX_FUNCTION_LINES,
        TOP_LINES,
        USE_ONNX,
        WORKERS,
    )

    fields = ScanConfig.model_fields

    parser = subparsers.add_parser(
        "scan",
        help="score the C/C++ functions of files, directories or a git diff",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH",
        help="files and directories (with --git-diff: optional paths that limit the diff)",
    )  # fmt: skip
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-dir", default=None, help="a saved detector directory")
    model.add_argument(
        "--registry", default=None,
        help="a model registry (e.g. runs/registry): use its production model",
    )  # fmt: skip
    parser.add_argument(
        "--git-diff", default=None, metavar="RANGE",
        help="A..B, A...B, or one revision (against the work tree): only touched functions",
    )  # fmt: skip
    parser.add_argument("--repo", default=".", help="the git work tree of --git-diff")
    parser.add_argument(
        "--threshold", type=_probability, default=None,
        help="flag at or above this probability (default: the model's tuned threshold)",
    )  # fmt: skip
    parser.add_argument(
        "--fail-on", type=_probability, default=None, metavar="P",
        help="exit 1 when a function's probability is at or above P (default: never)",
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=("table", "jsonl", "sarif"), default="table",
        help="table (text), jsonl (one finding per line, then a summary) or sarif (SARIF 2.1.0, "
        "flagged functions only)",
    )  # fmt: skip
    parser.add_argument("--output", default=None, help="write there instead of stdout")
    parser.add_argument(
        "--base-dir", default=None, metavar="DIR",
        help="sarif: file URIs are relative to DIR (default: --repo with --git-diff, else the "
        "current directory); files outside it get absolute file:// URIs",
    )  # fmt: skip
    parser.add_argument(
        "--explain", choices=get_args(fields["explain"].annotation), default=EXPLAIN,
        help=_field_help("explain"),
    )  # fmt: skip
    parser.add_argument(
        "--top-lines", type=_scan_field("top_lines"), default=TOP_LINES, metavar="N",
        help=_field_help("top_lines"),
    )  # fmt: skip
    parser.add_argument(
        "--ig-steps", type=_scan_field("ig_steps"), default=IG_STEPS, metavar="N",
        help=_field_help("ig_steps"),
    )  # fmt: skip
    parser.add_argument(
        "--onnx", dest="use_onnx", action=argparse.BooleanOptionalAction, default=USE_ONNX,
        help=_field_help("use_onnx"),
    )  # fmt: skip
    parser.add_argument("--top", type=_positive, default=None, help="table: the N highest only")
    parser.add_argument("--batch-size", type=_positive, default=BATCH_SIZE)
    parser.add_argument(
        "--workers", type=_scan_field("workers"), default=WORKERS, metavar="N",
        help=_field_help("workers"),
    )  # fmt: skip
    parser.add_argument(
        "--max-file-bytes", type=_positive, default=MAX_FILE_BYTES,
        help="skip larger files (too_large)",
    )  # fmt: skip
    parser.add_argument(
        "--max-function-lines", type=_positive, default=MAX_FUNCTION_LINES,
        help="skip longer functions (function_too_long)",
    )  # fmt: skip
    parser.set_defaults(func=cmd_scan)
    return parser


def _usage_error(message: str) -> int:
    print(f"streamguard scan: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def resolve_model_dir(model_dir: str | None, registry: str | None) -> str:
    """The model directory the flags name (``--registry``: its production version).

    Raises:
        ValueError: neither flag, or a registry without a production model.
    """
    if model_dir:
        return model_dir
    if not registry:
        raise ValueError("give --model-dir DIR or --registry DIR")
    from streamguard_core.pipeline.registry import ModelRegistry

    production = ModelRegistry(registry).production()
    if production is None:
        raise ValueError(f"{registry}: the registry has no production model")
    return str(production["model_dir"])


def cmd_scan(args: argparse.Namespace) -> int:
    """``streamguard scan``; see :data:`DESCRIPTION` for the exit codes."""
    from streamguard_core.data.loaders import DataError
    from streamguard_core.io import atomic_write_text
    from streamguard_core.scan.discover import ScanError
    from streamguard_core.scan.run import format_table, jsonl_rows, scan, write_jsonl
    from streamguard_core.scan.sarif import sarif_json

    if not args.paths and args.git_diff is None:
        return _usage_error("give a PATH to scan or --git-diff RANGE")
    if args.base_dir is not None and not Path(args.base_dir).is_dir():
        return _usage_error(f"--base-dir {args.base_dir}: not a directory")
    try:
        model_dir = resolve_model_dir(args.model_dir, args.registry)
        # with --git-diff, PATHs limit the diff; git reads them relative to the repository
        paths = [str(Path(p).resolve()) for p in args.paths] if args.git_diff else args.paths
        result = scan(
            paths,
            model_dir,
            git_diff=args.git_diff,
            repo=args.repo,
            threshold=args.threshold,
            batch_size=args.batch_size,
            max_function_lines=args.max_function_lines,
            max_file_bytes=args.max_file_bytes,
            progress=sys.stderr.isatty(),
            explain=args.explain,
            top_lines=args.top_lines,
            ig_steps=args.ig_steps,
            use_onnx=args.use_onnx,
            workers=args.workers,
        )
    except (ValueError, DataError, ScanError) as exc:
        return _usage_error(str(exc))
    if args.format == "sarif":
        # git-diff findings name files relative to the repository, others relative to the cwd
        source_root = Path(args.repo) if args.git_diff else Path.cwd()
        base_dir = Path(args.base_dir) if args.base_dir else source_root
        sarif = sarif_json(result, base_dir=base_dir, source_root=source_root)
        if args.output:
            atomic_write_text(Path(args.output), sarif)
        else:
            sys.stdout.write(sarif)
    elif args.format == "jsonl":
        if args.output:
            write_jsonl(result, args.output)
        else:
            for row in jsonl_rows(result):
                print(json.dumps(row))
    else:
        table = format_table(result, args.top)
        if args.output:
            atomic_write_text(Path(args.output), table)
        else:
            sys.stdout.write(table)
    if args.fail_on is not None and any(f.probability >= args.fail_on for f in result.findings):
        return EXIT_FINDING
    return EXIT_OK
