"""``streamguard scan``: find C/C++ functions in files, directories or a git diff and score them."""

from streamguard_core.scan.discover import (
    ChangedFile,
    ScanError,
    Skipped,
    SourceFile,
    changed_lines,
    iter_diff_sources,
    iter_sources,
)
from streamguard_core.scan.run import (
    Finding,
    ScanResult,
    format_table,
    jsonl_rows,
    scan,
    write_jsonl,
)
from streamguard_core.scan.sarif import sarif_json, sarif_log, write_sarif

__all__ = [
    "ChangedFile",
    "Finding",
    "ScanError",
    "ScanResult",
    "Skipped",
    "SourceFile",
    "changed_lines",
    "format_table",
    "iter_diff_sources",
    "iter_sources",
    "jsonl_rows",
    "sarif_json",
    "sarif_log",
    "scan",
    "write_jsonl",
    "write_sarif",
]
