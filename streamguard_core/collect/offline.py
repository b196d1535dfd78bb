"""The offline source (``--source file``): OSV records plus functions already extracted from
their fix commits, read from files (``../shared/data``'s OSS-Fuzz files by default).

The records give :class:`FixRef` rows exactly as the OSV collector reads them (the same parser,
:func:`streamguard_core.collect.osv.fixrefs_from_osv`); the functions file gives
:class:`CollectedFunction` rows (the fields of ``ossfuzz_fixes.jsonl.gz``), each with its
provenance (file and line). Malformed lines and rows become counted rejects; both readers resume
from the line number kept in the cursor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from streamguard_core.collect.base import Collector
from streamguard_core.collect.records import (
    CollectedFunction,
    FixRef,
    SourceReject,
    function_id,
)
from streamguard_core.config import FileSourceConfig
from streamguard_core.data.loaders import DataError, _iter_jsonl
from streamguard_core.schema import Reject

SOURCE = "file"
_REQUIRED_STR = ("func", "project", "osv_id", "repo", "fix_commit", "file", "function", "pair_id")


def _reject(
    reason: str, detail: str, where: str, obj: dict[str, Any] | None = None
) -> SourceReject:
    obj = obj or {}
    return SourceReject(
        SOURCE,
        reason,
        detail,
        vuln_id=obj.get("osv_id") if isinstance(obj.get("osv_id"), str) else None,
        repo=obj.get("repo") if isinstance(obj.get("repo"), str) else None,
        commit=obj.get("fix_commit") if isinstance(obj.get("fix_commit"), str) else None,
        file=obj.get("file") if isinstance(obj.get("file"), str) else None,
        function=obj.get("function") if isinstance(obj.get("function"), str) else None,
        where=where,
    )


def function_from_row(obj: dict[str, Any], where: str) -> CollectedFunction | SourceReject:
    """One ``ossfuzz_fixes``-shaped row as a :class:`CollectedFunction`, or why it is refused."""
    for key in _REQUIRED_STR:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            return _reject(
                "invalid_record", f"field {key!r} must be a non-empty string", where, obj
            )
    target = obj.get("target")
    if isinstance(target, bool) or target not in (0, 1):
        return _reject("invalid_record", f"target must be 0 or 1, got {target!r}", where, obj)
    n_changed = obj.get("n_changed_functions")
    if n_changed is not None and (isinstance(n_changed, bool) or not isinstance(n_changed, int)):
        return _reject(
            "invalid_record", f"n_changed_functions must be an integer, got {n_changed!r}",
            where, obj,
        )  # fmt: skip
    for key in ("in_crash_state", "fix_is_exact"):
        if obj.get(key) is not None and not isinstance(obj.get(key), bool):
            return _reject("invalid_record", f"{key} must be true/false", where, obj)
    pair = obj["pair_id"]
    return CollectedFunction(
        id=function_id(SOURCE, obj["osv_id"], pair, int(target)),
        func=obj["func"],
        target=int(target),
        source=SOURCE,
        project=obj["project"],
        vuln_id=obj["osv_id"],
        repo=obj["repo"],
        fix_commit=obj["fix_commit"],
        parent_commit=str(obj.get("parent_commit") or ""),
        file=obj["file"],
        function=obj["function"],
        pair_id=pair,
        published=obj.get("published"),
        crash_type=obj.get("crash_type"),
        in_crash_state=obj.get("in_crash_state"),
        n_changed_functions=n_changed,
        fix_is_exact=obj.get("fix_is_exact"),
        provenance={"source": SOURCE, "where": where, "extractor": "pre-extracted"},
    )


class FileSource(Collector):
    """OSV records and pre-extracted functions from files (the offline source)."""

    name: ClassVar[str] = SOURCE

    def __init__(self, config: FileSourceConfig) -> None:
        self.config = config
        for path in (config.records, config.functions):
            if not Path(path).is_file():
                raise DataError(f"{path}: offline source file does not exist")

    def _lines(
        self, path: str, cursor: dict[str, Any], key: str
    ) -> Iterator[tuple[str, dict[str, Any] | SourceReject]]:
        """(where, object or reject) from ``cursor[key]`` + 1 on; advances the cursor after
        each line has been handled by the consumer."""
        start = int(cursor.get(key, 0))
        for line, obj in _iter_jsonl(Path(path)):
            if line <= start:
                continue
            where = f"{path}:{line}"
            if isinstance(obj, Reject):
                yield where, _reject("malformed_json", f"{obj.reason}: {obj.detail}", where)
            else:
                yield where, obj
            cursor[key] = line

    def iter_fixes(self, cursor: dict[str, Any]) -> Iterator[FixRef | SourceReject]:
        """Fix references of the OSV records file (resumable by line)."""
        from streamguard_core.collect.osv import fixrefs_from_osv

        for where, obj in self._lines(self.config.records, cursor, "records_line"):
            if isinstance(obj, SourceReject):
                yield obj
                continue
            refs, rejects = fixrefs_from_osv(obj, SOURCE, where)
            yield from refs
            yield from rejects
        cursor["records_done"] = True

    def iter_functions(self, cursor: dict[str, Any]) -> Iterator[CollectedFunction | SourceReject]:
        """Rows of the functions file (resumable by line)."""
        for where, obj in self._lines(self.config.functions, cursor, "functions_line"):
            yield obj if isinstance(obj, SourceReject) else function_from_row(obj, where)
        cursor["functions_done"] = True
