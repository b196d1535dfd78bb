"""Score every C/C++ function of files, directories or a git diff with a saved detector.

Outputs: :func:`format_table` (aligned text, skipped files and their reasons at the end) and
:func:`write_jsonl` / :func:`jsonl_rows`: one :class:`Finding` per line, sorted by probability,
then one final ``{"summary": {...}}`` line holding the counts, the threshold, the model
directory and every skipped file or function with its reason.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamguard_core.collect.functions import extract_file_functions
from streamguard_core.config import ScanConfig
from streamguard_core.explain.lines import LineScore
from streamguard_core.io import write_jsonl as _write_rows
from streamguard_core.models.registry import load_detector
from streamguard_core.scan.discover import (
    MAX_FILE_BYTES,
    Skipped,
    SourceFile,
    iter_diff_sources,
    iter_sources,
)

BATCH_SIZE: int = ScanConfig.model_fields["batch_size"].default
MAX_FUNCTION_LINES: int = ScanConfig.model_fields["max_function_lines"].default
EXPLAIN: str = ScanConfig.model_fields["explain"].default
TOP_LINES: int = ScanConfig.model_fields["top_lines"].default
IG_STEPS: int = ScanConfig.model_fields["ig_steps"].default
USE_ONNX: bool = ScanConfig.model_fields["use_onnx"].default
WORKERS: int = ScanConfig.model_fields["workers"].default
PROGRESS_MIN_FUNCTIONS = 256  # below this a progress bar is noise


@dataclass(frozen=True, slots=True)
class Finding:
    """One scored function: where it is, its probability, and whether it crosses the threshold."""

    file: str
    function: str
    start_line: int
    end_line: int
    probability: float
    flagged: bool
    language: str
    lines: tuple[LineScore, ...] = ()
    """The most relevant lines (file line numbers), highest score first; empty when the
    finding was not explained (see ``explain``)."""


@dataclass
class ScanResult:
    """Findings sorted by probability (highest first), skipped items and counts."""

    findings: list[Finding]
    skipped: list[Skipped]
    threshold: float
    model_dir: str
    files: int = 0
    parse_error_files: int = 0
    functions_outside_diff: int = 0

    @property
    def functions(self) -> int:
        """Functions scored."""
        return len(self.findings)

    @property
    def flagged(self) -> int:
        """Functions at or above the threshold."""
        return sum(f.flagged for f in self.findings)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """How many files or functions each reason skipped."""
        return dict(sorted(Counter(s.reason for s in self.skipped).items()))

    def summary(self) -> dict[str, Any]:
        """Counts, threshold, model and the skipped list as plain JSON values."""
        return {
            "files": self.files,
            "functions": self.functions,
            "flagged": self.flagged,
            "threshold": self.threshold,
            "model_dir": self.model_dir,
            "parse_error_files": self.parse_error_files,
            "functions_outside_diff": self.functions_outside_diff,
            "skipped_by_reason": self.skipped_by_reason,
            "skipped": [asdict(s) for s in self.skipped],
        }


_SCORER: dict[str, Any] = {}


def _init_scorer(model_dir: str, use_onnx: bool) -> None:
    """A scoring process: one thread (the processes are the parallelism), the model once."""
    import torch

    torch.set_num_threads(1)
    _SCORER["detector"] = load_detector(model_dir, use_onnx=use_onnx)


def _score_batch(batch: list[str]) -> list[float]:
    return [float(p) for p in _SCORER["detector"].predict_proba(batch)]


def _batched_proba(
    detector: Any,
    texts: list[str],
    batch_size: int,
    progress: bool,
    workers: int = 1,
    model_dir: str | Path | None = None,
    use_onnx: bool = USE_ONNX,
) -> list[float]:
    """``detector.predict_proba`` over ``texts`` in batches, with a bar on big scans.

    ``workers`` > 1 (and ``model_dir``): the batches go to that many spawned processes, each
    loading the model once, in order (the same probabilities as one process).
    """
    from tqdm.auto import tqdm

    batches = [texts[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    probs: list[float] = []
    with tqdm(
        total=len(texts),
        unit="fn",
        desc="scan",
        file=sys.stderr,
        disable=not progress or len(texts) < PROGRESS_MIN_FUNCTIONS,
    ) as bar:
        if workers > 1 and model_dir is not None and len(batches) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(
                min(workers, len(batches)),
                mp_context=mp.get_context("spawn"),  # torch and tokenizers threads: no fork
                initializer=_init_scorer,
                initargs=(str(model_dir), use_onnx),
            ) as pool:
                for scored in pool.map(_score_batch, batches):
                    probs.extend(scored)
                    bar.update(len(scored))
            return probs
        for batch in batches:
            probs.extend(float(p) for p in detector.predict_proba(batch))
            bar.update(len(batch))
    return probs


def scan(
    paths: Sequence[str],
    model_dir: str | Path,
    *,
    git_diff: str | None = None,
    repo: str | Path = ".",
    threshold: float | None = None,
    batch_size: int = BATCH_SIZE,
    max_function_lines: int = MAX_FUNCTION_LINES,
    max_file_bytes: int = MAX_FILE_BYTES,
    progress: bool = False,
    detector: Any | None = None,
    explain: str = EXPLAIN,
    top_lines: int = TOP_LINES,
    ig_steps: int = IG_STEPS,
    use_onnx: bool = USE_ONNX,
    workers: int = WORKERS,
) -> ScanResult:
    """Extract the functions of ``paths`` (or of a git diff) and score them.

    Args:
        paths: files and directories; with ``git_diff``, paths that limit the diff.
        model_dir: a saved detector (any kind :func:`load_detector` reads).
        git_diff: ``A..B`` / ``A...B`` / one revision (against the work tree): keep only the
            functions whose lines the change touches.
        repo: the git work tree of ``git_diff``.
        threshold: flag at or above this probability (None: the model's own threshold).
        batch_size: functions per ``predict_proba`` call.
        max_function_lines: longer functions are skipped (``function_too_long``).
        max_file_bytes: larger files are skipped (``too_large``).
        progress: show a progress bar on stderr for big scans.
        detector: an already loaded detector for ``model_dir`` (skips loading it again).
        explain: ``flagged`` / ``all`` / ``none``: which findings get their ``top_lines``
            most relevant lines (:mod:`streamguard_core.explain`).
        top_lines: lines kept per explained finding.
        ig_steps: integrated-gradients steps of the neural explainers.
        use_onnx: score with onnxruntime when the model directory holds an ONNX export.
        workers: scoring processes (spawned, each loads the model; same results as 1).

    Raises:
        ScanError: a bad revision range or a ``repo`` that is not a git work tree.
        DataError: ``model_dir`` holds no detector.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if explain not in ("flagged", "all", "none"):
        raise ValueError(f"explain must be flagged, all or none, got {explain!r}")
    if detector is None:
        detector = load_detector(model_dir, use_onnx=use_onnx)
    cutoff = float(detector.threshold if threshold is None else threshold)
    sources: Iterator[SourceFile | Skipped] = (
        iter_diff_sources(repo, git_diff, paths, max_file_bytes=max_file_bytes)
        if git_diff is not None
        else iter_sources(paths, max_file_bytes=max_file_bytes)
    )
    result = ScanResult([], [], cutoff, str(model_dir))
    spans: list[tuple[str, str, int, int, str]] = []
    texts: list[str] = []
    for item in sources:
        if isinstance(item, Skipped):
            result.skipped.append(item)
            continue
        result.files += 1
        defs, had_errors, language = extract_file_functions(item.path, item.text)
        result.parse_error_files += had_errors
        for func in defs:
            if not item.touches(func.start_line, func.end_line):
                result.functions_outside_diff += 1
                continue
            n_lines = func.end_line - func.start_line + 1
            if n_lines > max_function_lines:
                result.skipped.append(
                    Skipped(
                        f"{item.path}:{func.start_line}-{func.end_line}",
                        "function_too_long",
                        f"{func.name}: {n_lines} lines > {max_function_lines}",
                    )
                )
                continue
            spans.append((item.path, func.name, func.start_line, func.end_line, language or ""))
            texts.append(func.text)
    probs = (
        _batched_proba(detector, texts, batch_size, progress, workers, model_dir, use_onnx)
        if texts
        else []
    )
    explained = [
        i for i, p in enumerate(probs) if explain == "all" or (explain == "flagged" and p >= cutoff)
    ]
    lines: dict[int, tuple[LineScore, ...]] = {}
    if explained:
        first_lines = [spans[i][2] for i in explained]
        chosen = [texts[i] for i in explained]
        lines = _explain(
            model_dir, detector, chosen, explained, first_lines, top_lines, ig_steps, progress
        )
    result.findings = sorted(
        (
            Finding(path, name, start, end, p, p >= cutoff, language, lines.get(i, ()))
            for i, ((path, name, start, end, language), p) in enumerate(
                zip(spans, probs, strict=True)
            )
        ),
        key=lambda f: (-f.probability, f.file, f.start_line),
    )
    return result


def _explain(
    model_dir: str | Path,
    detector: Any,
    texts: list[str],
    indices: list[int],
    first_lines: list[int],
    k: int,
    ig_steps: int,
    progress: bool,
) -> dict[int, tuple[LineScore, ...]]:
    """The ``k`` most relevant file lines of each explained function, by finding index."""
    from streamguard_core.explain import file_top_lines, load_explainer

    explainer = load_explainer(model_dir, detector=detector, ig_steps=ig_steps)
    found = file_top_lines(explainer, texts, first_lines, k, progress)
    return dict(zip(indices, found, strict=True))


def jsonl_rows(result: ScanResult) -> Iterator[dict[str, Any]]:
    """One row per finding, then ``{"summary": ...}`` (see :meth:`ScanResult.summary`)."""
    for finding in result.findings:
        yield asdict(finding)
    yield {"summary": result.summary()}


def write_jsonl(result: ScanResult, path: str | Path) -> int:
    """Write :func:`jsonl_rows` atomically; returns the number of lines."""
    return _write_rows(path, jsonl_rows(result))


def format_table(result: ScanResult, top: int | None = None) -> str:
    """An aligned text table of the findings (``top``: the highest ``top`` only), a summary
    line, and the skipped files with their reasons.

    When a shown finding was explained, a ``lines`` column holds its most relevant file lines,
    most relevant first (``12,15,9``; ``-`` for findings that were not explained).
    """
    shown = result.findings if top is None else result.findings[:top]
    with_lines = any(f.lines for f in shown)
    header = ("probability", "flagged", "location", *(("lines",) if with_lines else ()),
              "function")  # fmt: skip
    rows = [
        (f"{f.probability:.4f}", "yes" if f.flagged else "no",
         f"{f.file}:{f.start_line}-{f.end_line}",
         *((",".join(str(s.line) for s in f.lines) or "-",) if with_lines else ()), f.function)
        for f in shown
    ]  # fmt: skip
    padded = len(header) - 1  # every column but the last (the function name) is padded
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(padded)]
    lines = [
        "  ".join([row[0].rjust(widths[0]),
                   *(row[i].ljust(widths[i]) for i in range(1, padded)), row[-1]]).rstrip()
        for row in [header, *rows]
    ]  # fmt: skip
    if len(shown) < len(result.findings):
        lines.append(f"... {len(result.findings) - len(shown)} more below the top {len(shown)}")
    lines.append(
        f"{result.files} files, {result.functions} functions, {result.flagged} flagged "
        f"(threshold {result.threshold:.4f}), {result.parse_error_files} files with parse "
        f"errors, {len(result.skipped)} skipped"
    )
    if result.functions_outside_diff:
        lines.append(f"{result.functions_outside_diff} functions outside the diff left out")
    if result.skipped:
        lines.append("skipped:")
        width = max(len(s.path) for s in result.skipped)
        width_reason = max(len(s.reason) for s in result.skipped)
        lines.extend(
            f"  {s.path.ljust(width)}  {s.reason.ljust(width_reason)}  {s.detail}".rstrip()
            for s in result.skipped
        )
    return "\n".join(lines) + "\n"
