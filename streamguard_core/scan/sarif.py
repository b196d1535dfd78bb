"""A scan as SARIF 2.1.0, the format GitHub code scanning and SARIF viewers read.

One run, one rule (:data:`RULE_ID`, ``vulnerable-function``) and one result per *flagged*
function; functions below the threshold are left out (they are in the JSON Lines output).

- ``level``: ``error`` when the probability is at or above the midpoint between the threshold
  and 1 (:func:`level_for`), ``warning`` otherwise.
- ``locations[0]``: the function's file (``uri`` relative to ``base_dir`` with
  ``uriBaseId: "SRCROOT"``, or an absolute ``file://`` URI for a file outside it) and its
  ``region`` (first and last line), with the function as a logical location.
- ``relatedLocations``: the finding's most relevant lines (``Finding.lines``), one-line
  regions inside the function, ``id`` = rank (1 = the most relevant); the message links them.
- ``partialFingerprints[FINGERPRINT_KEY]``: :func:`function_fingerprint`, a hash of the file's
  URI and the function's name, so that an alert follows its function across commits that move
  or edit it and closes when the function is no longer flagged.
- ``run.invocations[0].toolExecutionNotifications``: one ``note`` per skipped file or function
  (``properties.reason`` holds the scan's reason code, e.g. ``binary``, ``too_large``,
  ``function_too_long``) and one for files that parsed with errors, so nothing is dropped
  silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from streamguard_core.io import atomic_write_text
from streamguard_core.scan.discover import Skipped
from streamguard_core.scan.run import Finding, ScanResult

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_NAME = "StreamGuard"
PACKAGE = "streamguard"
RULE_ID = "SG1000"
RULE_NAME = "vulnerable-function"
SRCROOT = "SRCROOT"
FINGERPRINT_KEY = "streamguardFunction/v1"
# SARIF's names for source languages (appendix "sourceLanguage values")
SOURCE_LANGUAGES = {"c": "c", "cpp": "cplusplus"}
_FUNCTION_SPAN_RE = re.compile(r"^(?P<file>.+):(?P<start>\d+)-(?P<end>\d+)$")
_MESSAGE_SPECIAL_RE = re.compile(r"([\\\[\]])")


def level_for(probability: float, threshold: float) -> str:
    """``error`` at or above the midpoint of ``threshold`` and 1, else ``warning``."""
    return "error" if probability >= error_cutoff(threshold) else "warning"


def error_cutoff(threshold: float) -> float:
    """The probability from which a flagged function is an ``error``: ``(threshold + 1) / 2``."""
    return (threshold + 1.0) / 2.0


def function_fingerprint(uri: str, function: str, ordinal: int = 0) -> str:
    """sha256 of the file URI, the function name and (for same-named functions in one file,
    ordered by line) the function's ordinal: stable while the function keeps its name and file.

    Line numbers and the body are left out on purpose: adding lines above a function or
    editing it without fixing it keeps the alert (and a dismissal of it) instead of closing
    it and opening a new one.
    """
    key = f"{uri}\0{function}\0{ordinal}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def tool_version() -> str:
    """The installed ``streamguard`` version (``0+unknown`` when it is not installed)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def information_uri() -> str | None:
    """The project's home page from the package metadata (``[project.urls]``), if it has one."""
    try:
        meta = metadata.metadata(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("homepage", "home", "repository", "source") and url.strip():
            return url.strip()
    home = meta.get_all("Home-page") or []
    return home[0] if home and home[0] else None


class _Locator:
    """Turns scan paths into SARIF artifact locations and collects ``run.artifacts``."""

    def __init__(self, base_dir: Path, source_root: Path) -> None:
        self.base_dir = base_dir.resolve()
        self.source_root = source_root.resolve()
        self.artifacts: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}
        self._uris: dict[str, tuple[str, str | None]] = {}

    def uri(self, path: str) -> tuple[str, str | None]:
        """(uri, uriBaseId): relative to ``base_dir`` under SRCROOT, else absolute file URI."""
        if path not in self._uris:  # resolve() reads the file system: once per file
            p = Path(path)
            absolute = (p if p.is_absolute() else self.source_root / p).resolve()
            try:
                relative = absolute.relative_to(self.base_dir)
                self._uris[path] = quote(relative.as_posix(), safe="/"), SRCROOT
            except ValueError:
                self._uris[path] = absolute.as_uri(), None
        return self._uris[path]

    def location(self, path: str, language: str | None = None) -> dict[str, Any]:
        """An ``artifactLocation`` for ``path`` (with ``index`` into ``run.artifacts``)."""
        uri, base_id = self.uri(path)
        loc: dict[str, Any] = {"uri": uri}
        if base_id is not None:
            loc["uriBaseId"] = base_id
        if uri not in self._index:
            self._index[uri] = len(self.artifacts)
            artifact: dict[str, Any] = {"location": dict(loc)}
            if language in SOURCE_LANGUAGES:
                artifact["sourceLanguage"] = SOURCE_LANGUAGES[language]
            self.artifacts.append(artifact)
        loc["index"] = self._index[uri]
        return loc

    def root_uri(self) -> str:
        """``base_dir`` as an absolute file URI ending in ``/`` (SARIF requires the slash)."""
        uri = self.base_dir.as_uri()
        return uri if uri.endswith("/") else uri + "/"


def _escape_message(text: str) -> str:
    """Escape what SARIF message text reads as link syntax (``[``, ``]``) and backslashes."""
    return _MESSAGE_SPECIAL_RE.sub(r"\\\1", text)


def _model_kind(model_dir: str) -> str | None:
    """The ``kind`` in ``model_dir/model_card.json``, None when it cannot be read."""
    try:
        kind = json.loads((Path(model_dir) / "model_card.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return str(kind) if kind is not None else None


def _rule(result: ScanResult, kind: str | None) -> dict[str, Any]:
    """The one reporting descriptor every result refers to."""
    t = result.threshold
    properties: dict[str, Any] = {
        "tags": ["security", "machine-learning"],
        "modelDir": result.model_dir,
        "threshold": t,
        "errorCutoff": error_cutoff(t),
    }
    if kind is not None:
        properties["modelKind"] = kind
    model = f"a {kind} detector" if kind else "a learned detector"
    help_text = (
        f"{model.capitalize()} scored this function's probability of holding a vulnerability at "
        f"or above its decision threshold ({t:.4f}). Results are 'error' from probability "
        f"{error_cutoff(t):.4f} (the midpoint between the threshold and 1), 'warning' below. "
        "The related locations are the lines that pushed the score up most (attributions, "
        "rank 1 first). A model trained on public vulnerability data is a triage aid, not a "
        "proof: review the function, its inputs and its callers."
    )
    return {
        "id": RULE_ID,
        "name": RULE_NAME,
        "shortDescription": {"text": "Function likely to contain a vulnerability"},
        "fullDescription": {
            "text": f"{model.capitalize()} scores every C/C++ function of the scanned code; "
            "functions at or above its threshold are reported."
        },
        "help": {"text": help_text},
        "defaultConfiguration": {"level": "warning"},
        "properties": properties,
    }


def _ordinals(findings: list[Finding], locator: _Locator) -> dict[tuple[str, str, int], int]:
    """The position of each function among same-named functions of its file, by line."""
    by_name: dict[tuple[str, str], list[int]] = defaultdict(list)
    for f in findings:
        by_name[locator.uri(f.file)[0], f.function].append(f.start_line)
    return {
        (uri, name, start): i
        for (uri, name), starts in by_name.items()
        for i, start in enumerate(sorted(set(starts)))
    }


def _result(
    finding: Finding, threshold: float, locator: _Locator, ordinal: int, kind: str | None
) -> dict[str, Any]:
    """One SARIF result for a flagged finding."""
    artifact = locator.location(finding.file, finding.language)
    p = finding.probability
    name = _escape_message(finding.function)
    text = (
        f"Function '{name}' scored {p:.4f} for holding a vulnerability (threshold "
        f"{threshold:.4f}{f', {kind} model' if kind else ''})."
    )
    related: list[dict[str, Any]] = [
        {
            "id": rank,
            "physicalLocation": {
                "artifactLocation": artifact,
                "region": {"startLine": ls.line, "endLine": ls.line},
            },
            "message": {"text": f"attribution score {float(ls.score):.4g}, rank {rank}"},
        }
        for rank, ls in enumerate(finding.lines, start=1)
    ]
    if finding.lines:
        links = ", ".join(f"[line {ls.line}]({rank})" for rank, ls in enumerate(finding.lines, 1))
        text += f" Most relevant lines: {links}."
    out: dict[str, Any] = {
        "ruleId": RULE_ID,
        "ruleIndex": 0,
        "kind": "fail",
        "level": level_for(p, threshold),
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": artifact,
                    "region": {"startLine": finding.start_line, "endLine": finding.end_line},
                },
                "logicalLocations": [
                    {
                        "name": finding.function,
                        "fullyQualifiedName": finding.function,
                        "kind": "function",
                    }
                ],
            }
        ],
        "partialFingerprints": {
            FINGERPRINT_KEY: function_fingerprint(artifact["uri"], finding.function, ordinal)
        },
        "rank": round(100.0 * p, 4),
        "properties": {"probability": p, "threshold": threshold, "language": finding.language},
    }
    if related:
        out["relatedLocations"] = related
    return out


def _notification(skipped: Skipped, locator: _Locator) -> dict[str, Any]:
    """A ``note`` for one skipped file (or ``path:start-end`` function) with its reason."""
    path, region = skipped.path, None
    match = _FUNCTION_SPAN_RE.match(path) if skipped.reason == "function_too_long" else None
    if match:
        path = match["file"]
        region = {"startLine": int(match["start"]), "endLine": int(match["end"])}
    physical: dict[str, Any] = {"artifactLocation": locator.location(path)}
    if region is not None:
        physical["region"] = region
    detail = f": {skipped.detail}" if skipped.detail else ""
    return {
        "level": "note",
        "message": {"text": _escape_message(f"Skipped {skipped.path} ({skipped.reason}){detail}")},
        "locations": [{"physicalLocation": physical}],
        "properties": {"reason": skipped.reason},
    }


def sarif_log(
    result: ScanResult,
    *,
    base_dir: str | Path | None = None,
    source_root: str | Path | None = None,
) -> dict[str, Any]:
    """The SARIF 2.1.0 log of ``result`` (see the module docstring for the mapping).

    Args:
        result: a :func:`~streamguard_core.scan.run.scan` result.
        base_dir: URIs are relative to this directory (``SRCROOT``); default: the current one.
            Upload to GitHub code scanning from the repository root.
        source_root: what relative ``Finding.file`` paths are relative to (default:
            ``base_dir``): the current directory for a scan of relative paths, the repository
            for a ``git_diff`` scan.
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    locator = _Locator(base, base if source_root is None else Path(source_root))
    kind = _model_kind(result.model_dir)
    ordinals = _ordinals(result.findings, locator)
    results = [
        _result(f, result.threshold, locator, ordinals[locator.uri(f.file)[0], f.function,
                f.start_line], kind)
        for f in result.findings
        if f.flagged
    ]  # fmt: skip
    notifications = [_notification(s, locator) for s in result.skipped]
    if result.parse_error_files:
        notifications.append(
            {
                "level": "note",
                "message": {
                    "text": f"{result.parse_error_files} file(s) parsed with syntax errors; the "
                    "functions tree-sitter recovered from them were scored, code inside the "
                    "broken regions may have been missed."
                },
                "properties": {"reason": "parse_errors", "count": result.parse_error_files},
            }
        )
    driver: dict[str, Any] = {
        "name": TOOL_NAME,
        "version": tool_version(),
        "rules": [_rule(result, kind)],
    }
    info = information_uri()
    if info:
        driver["informationUri"] = info
    run: dict[str, Any] = {
        "tool": {"driver": driver},
        "originalUriBaseIds": {
            SRCROOT: {
                "uri": locator.root_uri(),
                "description": {"text": "The directory the result paths are relative to."},
            }
        },
        "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
        "artifacts": locator.artifacts,
        "results": results,
        "properties": {
            "files": result.files,
            "functions": result.functions,
            "flagged": result.flagged,
            "parseErrorFiles": result.parse_error_files,
            "functionsOutsideDiff": result.functions_outside_diff,
            "skippedByReason": result.skipped_by_reason,
        },
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def sarif_json(result: ScanResult, **kwargs: Any) -> str:
    """:func:`sarif_log` as JSON text indented by two spaces (orjson: the stdlib's indenting
    encoder is pure Python, ~10x slower on a big log)."""
    return orjson.dumps(sarif_log(result, **kwargs), option=orjson.OPT_INDENT_2).decode() + "\n"


def write_sarif(
    result: ScanResult,
    path: str | Path,
    base_dir: str | Path | None = None,
    source_root: str | Path | None = None,
) -> Path:
    """Write :func:`sarif_log` to ``path`` atomically; returns the path."""
    return atomic_write_text(path, sarif_json(result, base_dir=base_dir, source_root=source_root))
