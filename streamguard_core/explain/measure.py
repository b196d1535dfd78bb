"""Measure line localisation: do the lines an explainer ranks first hold the lines a fix changed?

``streamguard explain-eval`` scores explainers on real fixes (``ossfuzz_fixes.jsonl.gz``: the
pre-fix function, ``target`` 1, and its post-fix partner, ``target`` 0, share a ``pair_id``).

- Reference: LineVul's "flaw lines" (Fu & Tantithamthavorn, MSR 2022, after Big-Vul): the lines
  of the pre-fix function that the fix deletes or modifies. :func:`changed_lines` diffs the two
  versions line by line with :mod:`difflib` (whitespace-insensitive by default, so a re-indented
  line is not "changed"). A fix that only inserts lines has no such line: LineVul leaves those
  functions out, and so does this module (counted as ``insertion_only``).
- Candidates: the function's code lines (:func:`~streamguard_core.explain.lines.code_lines`:
  blank and brace-only lines are never ranked). Changed lines that are not code lines are dropped
  from the reference (counted); a function left with no reference line is left out (counted).
- Metrics per function, with ties in the explainer's scores broken in uniformly random order and
  taken in expectation (exact, :func:`rank_metrics`; a model that gives every line the same score
  is then exactly the random reference, not a "first lines" one): top-k hit (k = 1, 3, 5, 10; the
  share of functions with a hit is LineVul's top-k accuracy) and the rank of the first changed
  line among the code lines (1-based; LineVul's IFA, the clean lines inspected before it, is the
  rank minus 1).
- References, exact per function: random order (:func:`random_reference`: P(top-k hit) =
  1 - C(n-m, k) / C(n, k), E[first rank] = (n+1)/(m+1) for n code lines, m changed), the lines
  in source order from the top ("first lines") and the longest lines first ("longest lines": an
  attribution summed per line grows with the code on the line, whatever it means).
- Subsets: all functions, ``in_crash_state`` ones (the fixed function is the one in the crash
  stack: the likeliest to hold the bug) and the ones the model flags (probability at or above its
  threshold: LineVul scores its true positives only). Means with item-bootstrap 95% intervals
  (:mod:`streamguard_core.evaluation.stats`), the paired differences to the references with
  bootstrap intervals, and a Monte Carlo test against random order (:func:`random_order_draws`:
  the null draws every function's first changed line from its exact random-order distribution).

Repeats are measured once: a fix commit closing several OSV records repeats its rows, so the unit
is a distinct (pre-fix text, post-fix text) change, ``in_crash_state`` when any of its rows is.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.data.loaders import DataError
from streamguard_core.explain.lines import code_lines, line_starts
from streamguard_core.models.registry import MODEL_CARD

TOP_KS: tuple[int, ...] = (1, 3, 5, 10)
"""The k of the top-k accuracies (LineVul reports 1, 3, 5 and 10; 10 is the headline)."""
HEADLINE_K = 10
SUBSETS: tuple[str, ...] = ("all", "in_crash_state", "flagged")
REQUIRED_FIELDS = ("func", "target", "pair_id", "in_crash_state", "project")
NULL_DRAWS = 10_000
"""Random-order explainers drawn for the test against random order (p resolution 1e-4)."""
EXPLAIN_BATCH = 16
"""Functions per ``line_scores`` call: small enough for a smooth progress bar and timing."""
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class MeasurePaths:
    """Every file ``streamguard explain-eval`` writes, under one output directory."""

    root: Path

    @property
    def results(self) -> Path:
        """All figures, counts and settings (JSON)."""
        return self.root / "localisation.json"

    @property
    def table(self) -> Path:
        """The markdown table of the headline figures."""
        return self.root / "localisation.md"

    @property
    def functions(self) -> Path:
        """One JSON line per measured function: its reference lines and every model's result."""
        return self.root / "functions.jsonl"


@dataclass(frozen=True, slots=True)
class FixCase:
    """One distinct change: a pre-fix function, its post-fix version and the rows behind it."""

    before: str
    after: str
    in_crash_state: bool
    project: str
    pair_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """A fix case ready to rank: its code lines and which of them the fix changed.

    ``candidates`` [n]: 0-based indices of the code lines of ``case.before``, ascending;
    ``is_reference`` [n]: the fix deleted or modified that line.
    """

    case: FixCase
    candidates: np.ndarray
    is_reference: np.ndarray


# --------------------------------------------------------------------------- reference lines


def _normalise(line: str, ignore_whitespace: bool) -> str:
    return _WHITESPACE.sub("", line) if ignore_whitespace else line


def changed_lines(before: str, after: str, ignore_whitespace: bool = True) -> np.ndarray:
    """0-based indices of the lines of ``before`` that the change to ``after`` deletes or modifies.

    A line diff (:class:`difflib.SequenceMatcher`, no junk heuristic): lines of ``before`` in a
    ``delete`` or ``replace`` block. Pure insertions change no line of ``before``. With
    ``ignore_whitespace`` lines are compared with all whitespace removed, so a re-indented or
    re-spaced line counts as unchanged.
    """
    a = [_normalise(line, ignore_whitespace) for line in before.split("\n")]
    b = [_normalise(line, ignore_whitespace) for line in after.split("\n")]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    changed = [
        i
        for tag, i1, i2, _, _ in matcher.get_opcodes()
        if tag in ("delete", "replace")
        for i in range(i1, i2)
    ]
    return np.asarray(changed, dtype=np.int64)


def load_fix_cases(path: str | Path) -> tuple[list[FixCase], dict[str, int]]:
    """The distinct pre-fix -> post-fix changes of an OSS-Fuzz fixes file, and how rows were used.

    Counts: ``rows``, ``pre_fix_rows``, ``unpaired`` (pre-fix rows with no post-fix partner),
    ``repeats`` (pre-fix rows whose change was already seen) and ``changes`` (distinct changes;
    ``pre_fix_rows == unpaired + repeats + changes``).

    Raises:
        FileNotFoundError: no such file.
        DataError: a line that is not a JSON object with the fields this needs.
    """
    from streamguard_core.io import open_text

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    before: dict[str, dict[str, Any]] = {}
    after: dict[str, str] = {}
    rows = 0
    with open_text(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            missing = [f for f in REQUIRED_FIELDS if not isinstance(row, dict) or f not in row]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            if row["target"] not in (0, 1):
                raise DataError(f"{path}:{lineno}: target must be 0 or 1, got {row['target']!r}")
            rows += 1
            if row["target"] == 1:
                before[str(row["pair_id"])] = row
            else:
                after[str(row["pair_id"])] = str(row["func"])
    cases: dict[tuple[str, str], list[dict[str, Any]]] = {}
    unpaired = 0
    for pair_id, row in before.items():
        if pair_id not in after:
            unpaired += 1
            continue
        cases.setdefault((str(row["func"]), after[pair_id]), []).append(row)
    out = [
        FixCase(
            before=pre,
            after=post,
            in_crash_state=any(bool(r["in_crash_state"]) for r in group),
            project=str(group[0]["project"]),
            pair_ids=tuple(str(r["pair_id"]) for r in group),
        )
        for (pre, post), group in cases.items()
    ]
    counts = {
        "rows": rows,
        "pre_fix_rows": len(before),
        "unpaired": unpaired,
        "repeats": len(before) - unpaired - len(out),
        "changes": len(out),
    }
    return out, counts


def build_targets(
    cases: Sequence[FixCase], ignore_whitespace: bool = True
) -> tuple[list[Target], dict[str, int]]:
    """The cases that have a code line the fix changed, and why the others were left out.

    Counts: ``insertion_only`` (the fix changed no line of the pre-fix function),
    ``reference_not_code`` (it changed only blank or brace-only lines), ``targets`` (kept) and
    ``reference_lines_not_code`` (changed blank/brace lines dropped from kept targets' references).
    """
    targets: list[Target] = []
    counts = {"insertion_only": 0, "reference_not_code": 0, "reference_lines_not_code": 0}
    for case in cases:
        changed = changed_lines(case.before, case.after, ignore_whitespace)
        if changed.size == 0:
            counts["insertion_only"] += 1
            continue
        code = code_lines(case.before)
        if not code[changed].any():
            counts["reference_not_code"] += 1
            continue
        counts["reference_lines_not_code"] += int((~code[changed]).sum())
        candidates = np.flatnonzero(code)
        targets.append(Target(case, candidates, np.isin(candidates, changed)))
    counts["targets"] = len(targets)
    return targets, counts


# --------------------------------------------------------------------------- ranking metrics


def rank_metrics(
    scores: np.ndarray, is_reference: np.ndarray, ks: Sequence[int] = TOP_KS
) -> tuple[np.ndarray, float]:
    """Expected top-k hits and first reference rank when lines are ranked by ``scores``.

    Lines with equal scores come in uniformly random order, taken in exact expectation: within a
    tie group of ``g`` lines holding ``r`` reference lines, the first reference line comes at
    position (g+1)/(r+1), and ``s`` slots of a top-k that cut the group hit with probability
    1 - C(g-r, s)/C(g, s).

    Args:
        scores: [n] one finite score per candidate line (higher: ranked first).
        is_reference: [n] bool, at least one True.
        ks: the k of the top-k hits.

    Returns:
        ([len(ks)] expected top-k hit in [0, 1], expected 1-based rank of the first reference).
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_reference = np.asarray(is_reference, dtype=bool)
    if scores.shape != is_reference.shape or scores.ndim != 1:
        raise ValueError(f"{scores.shape} scores for {is_reference.shape} reference flags")
    if not is_reference.any():
        raise ValueError("no reference line to find")
    if not np.isfinite(scores).all():
        raise ValueError("line scores hold NaN or infinite values")
    _, group = np.unique(-scores, return_inverse=True)  # group 0: the highest score
    sizes = np.bincount(group)
    refs = np.bincount(group, weights=is_reference.astype(np.float64)).astype(np.int64)
    above = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    first = int(np.flatnonzero(refs)[0])
    first_rank = float(above[first] + (sizes[first] + 1) / (refs[first] + 1))
    # only the first group holding a reference line decides: it is above, cut by or below the
    # top k (groups before it hold none)
    size, ref = int(sizes[first]), int(refs[first])
    slots = [min(max(k - int(above[first]), 0), size) for k in ks]
    hits = [1.0 - math.comb(size - ref, s) / math.comb(size, s) for s in slots]
    return np.asarray(hits, dtype=np.float64), first_rank


def random_reference(n: int, m: int, ks: Sequence[int] = TOP_KS) -> tuple[np.ndarray, float]:
    """Top-k hit probabilities and expected first reference rank of a uniformly random order of
    ``n`` lines, ``m`` of them reference lines: 1 - C(n-m, k)/C(n, k) and (n+1)/(m+1)."""
    if not 1 <= m <= n:
        raise ValueError(f"need 1 <= m <= n, got n={n}, m={m}")
    hits = [1.0 - math.comb(n - m, min(k, n)) / math.comb(n, min(k, n)) for k in ks]
    return np.asarray(hits, dtype=np.float64), (n + 1) / (m + 1)


def first_lines_reference(
    is_reference: np.ndarray, ks: Sequence[int] = TOP_KS
) -> tuple[np.ndarray, float]:
    """Top-k hits and first reference rank of the lines read in source order from the top."""
    is_reference = np.asarray(is_reference, dtype=bool)
    first_rank = float(np.flatnonzero(is_reference)[0] + 1)
    return np.asarray([float(first_rank <= k) for k in ks]), first_rank


def longest_lines_reference(
    text: str, target: Target, ks: Sequence[int] = TOP_KS
) -> tuple[np.ndarray, float]:
    """Top-k hits and first reference rank of the code lines ranked by length (non-whitespace
    characters, ties in random order): what an explainer that only tracks "how much code is on
    this line" would score."""
    lines = text.split("\n")
    lengths = np.asarray([len(_normalise(lines[i], True)) for i in target.candidates], dtype=float)
    return rank_metrics(lengths, target.is_reference, ks)


REFERENCES: tuple[str, ...] = ("random", "first_lines", "longest_lines")
"""The references every model is compared with (``random`` in exact expectation)."""


def reference_metrics(
    target: Target, ks: Sequence[int] = TOP_KS
) -> dict[str, tuple[np.ndarray, float]]:
    """Every reference's top-k hits and first reference rank on one target."""
    return {
        "random": random_reference(len(target.candidates), int(target.is_reference.sum()), ks),
        "first_lines": first_lines_reference(target.is_reference, ks),
        "longest_lines": longest_lines_reference(target.case.before, target, ks),
    }


# --------------------------------------------------------------------------- summaries


def _mean_ci(values: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Mean of ``values`` and its bootstrap percentile 95% interval under resample ``weights``."""
    from streamguard_core.evaluation.stats import CI_QUANTILES

    draws = weights @ values / weights.sum(axis=1)
    low, high = np.percentile(draws, CI_QUANTILES)
    return {"estimate": float(values.mean()), "ci95_low": float(low), "ci95_high": float(high)}


def _paired(
    model: np.ndarray, reference: np.ndarray, weights: np.ndarray, higher_is_better: bool
) -> dict[str, Any]:
    """Model minus reference per function: the mean difference with its paired bootstrap
    interval and p, and how many functions went which way."""
    from streamguard_core.evaluation.stats import difference_summary

    diff = model - reference
    point = float(diff.mean())
    summary = difference_summary(point, weights @ diff / weights.sum(axis=1))
    better = diff > 1e-12 if higher_is_better else diff < -1e-12
    worse = diff < -1e-12 if higher_is_better else diff > 1e-12
    return {
        **summary,
        "better": int(better.sum()),
        "worse": int(worse.sum()),
        "tied": int((~better & ~worse).sum()),
    }


def random_order_draws(
    n_code: np.ndarray,
    n_reference: np.ndarray,
    n_draws: int,
    seed: int,
    ks: Sequence[int] = TOP_KS,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean top-k hits and mean first reference rank of ``n_draws`` random-order explainers.

    Each draw ranks every function's code lines in a fresh uniformly random order: function i's
    first reference rank R is drawn from its exact distribution, P(R > r) = C(n-r, m)/C(n, m).

    Returns:
        ([n_draws, len(ks)] mean top-k hit per draw, [n_draws] mean first rank per draw).
    """
    rng = np.random.default_rng(seed)
    hit_sum = np.zeros((n_draws, len(ks)))
    rank_sum = np.zeros(n_draws)
    for n, m in zip(n_code.astype(int), n_reference.astype(int), strict=True):
        j = np.arange(n)
        survival = np.cumprod(np.clip((n - m - j) / (n - j), 0.0, None))  # P(R > r), r = 1..n
        cdf = 1.0 - survival
        cdf[-1] = 1.0
        ranks = np.searchsorted(cdf, rng.random(n_draws), side="left") + 1
        rank_sum += ranks
        hit_sum += ranks[:, None] <= np.asarray(ks)[None, :]
    return hit_sum / len(n_code), rank_sum / len(n_code)


def _null_p(observed: float, expected: float, draws: np.ndarray) -> float:
    """Two-sided Monte Carlo p of ``observed`` under the null ``draws`` centred on ``expected``:
    ``(1 + #{|d - expected| >= |observed - expected|}) / (B + 1)``."""
    extreme = np.abs(draws - expected) >= abs(observed - expected) - 1e-12
    return float((1 + extreme.sum()) / (draws.size + 1))


def summarise(
    per_function: dict[str, np.ndarray], n_boot: int, seed: int, n_null: int = NULL_DRAWS
) -> dict[str, Any]:
    """Means, intervals and tests of one model on one subset of functions.

    ``per_function`` holds [n] arrays ([n, len(TOP_KS)] for ``*_hits``): ``model_hits`` and
    ``model_rank``, the same for every name of :data:`REFERENCES`, ``n_code_lines`` and
    ``n_reference``. Every subset of one run draws the same seeded resamples.

    Against random order the p-value (``p_random_order``) is a Monte Carlo test of "the ranking
    is a uniformly random order" (:func:`random_order_draws`, ``n_null`` draws): per-function
    differences to the random expectation are not symmetric under that null (a hit is 0 or 1, its
    expectation in between), so a Wilcoxon or sign test would not test it.
    """
    from streamguard_core.evaluation.stats import bootstrap_weights

    n = len(per_function["model_rank"])
    out: dict[str, Any] = {"n_functions": n}
    if n == 0:
        return out
    weights = bootstrap_weights(n, n_boot, seed)
    null_hits, null_rank = random_order_draws(
        per_function["n_code_lines"], per_function["n_reference"], n_null, seed
    )
    out["mean_code_lines"] = float(per_function["n_code_lines"].mean())
    out["mean_reference_lines"] = float(per_function["n_reference"].mean())
    out["top_k"] = {}
    for j, k in enumerate(TOP_KS):
        hits = {name: per_function[f"{name}_hits"][:, j] for name in ("model", *REFERENCES)}
        cell: dict[str, Any] = {name: _mean_ci(h, weights) for name, h in hits.items()}
        for name in REFERENCES:
            cell[f"model_minus_{name}"] = _paired(hits["model"], hits[name], weights, True)
        cell["model_minus_random"]["p_random_order"] = _null_p(
            hits["model"].mean(), hits["random"].mean(), null_hits[:, j]
        )
        out["top_k"][str(k)] = cell
    ranks = {name: per_function[f"{name}_rank"] for name in ("model", *REFERENCES)}
    rank_cell: dict[str, Any] = {
        name: {**_mean_ci(r, weights), "median": float(np.median(r))} for name, r in ranks.items()
    }
    for name in REFERENCES:
        rank_cell[f"model_minus_{name}"] = _paired(ranks["model"], ranks[name], weights, False)
    rank_cell["model_minus_random"]["p_random_order"] = _null_p(
        ranks["model"].mean(), ranks["random"].mean(), null_rank
    )
    out["first_rank"] = rank_cell
    out["ifa"] = float(ranks["model"].mean() - 1.0)
    return out


# --------------------------------------------------------------------------- running models


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model to measure: its report name and directory."""

    name: str
    model_dir: Path


def parse_model_spec(text: str) -> ModelSpec:
    """``DIR`` or ``NAME=DIR``; without a name, the model card's ``config.name`` or ``kind``."""
    name, sep, directory = text.partition("=")
    if not sep:
        name, directory = "", text
    path = Path(directory)
    card_path = path / MODEL_CARD
    if not card_path.exists():
        raise DataError(f"{path}: not a model directory (no {MODEL_CARD})")
    if not name:
        card = json.loads(card_path.read_text())
        name = str((card.get("config") or {}).get("name") or card.get("kind") or path.name)
    return ModelSpec(name, path)


def explain_functions(
    spec: ModelSpec, texts: list[str], ig_steps: int, progress: bool
) -> tuple[list[np.ndarray], np.ndarray, float, dict[str, Any]]:
    """Line scores and probabilities of ``texts`` under one model.

    Returns:
        (one [n_lines] array per text, [n] probabilities, the model's threshold, facts about
        the run: kind, whether it explains lines, seconds per function).
    """
    from tqdm.auto import tqdm

    from streamguard_core.explain.explainer import load_explainer, model_kind
    from streamguard_core.models.registry import load_detector

    detector = load_detector(spec.model_dir)
    explainer = load_explainer(spec.model_dir, detector=detector, ig_steps=ig_steps)
    start = time.perf_counter()
    probabilities = np.asarray(detector.predict_proba(texts), dtype=np.float64)
    predict_s = time.perf_counter() - start
    scores: list[np.ndarray] = []
    start = time.perf_counter()
    if explainer.explains_lines:  # otherwise every score is 0: nothing to rank
        with tqdm(
            total=len(texts),
            unit="fn",
            desc=f"explain {spec.name}",
            file=sys.stderr,
            disable=not progress,
        ) as bar:
            for i in range(0, len(texts), EXPLAIN_BATCH):
                chunk = texts[i : i + EXPLAIN_BATCH]
                for j, (text, s) in enumerate(
                    zip(chunk, explainer.line_scores(chunk, progress=False), strict=True)
                ):
                    if np.shape(s) != (len(line_starts(text)),):
                        raise ValueError(
                            f"{spec.model_dir}: function {i + j}: {np.shape(s)} line scores "
                            f"for {len(line_starts(text))} lines"
                        )
                    scores.append(np.asarray(s, dtype=np.float64))
                bar.update(len(chunk))
    explain_s = time.perf_counter() - start
    facts = {
        "kind": model_kind(spec.model_dir),
        "explains_lines": bool(explainer.explains_lines),
        "threshold": float(detector.threshold),
        "predict_seconds_per_function": predict_s / max(len(texts), 1),
        "explain_seconds_per_function": explain_s / max(len(texts), 1),
    }
    return scores, probabilities, float(detector.threshold), facts


def sample_targets(targets: list[Target], max_functions: int | None, seed: int) -> list[Target]:
    """All targets, or a seeded uniform sample of ``max_functions`` of them (in data order)."""
    if max_functions is None or max_functions >= len(targets):
        return targets
    if max_functions < 1:
        raise ValueError(f"max_functions must be >= 1, got {max_functions}")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(targets), size=max_functions, replace=False))
    return [targets[i] for i in keep]


def measure(
    data: str | Path,
    models: Sequence[ModelSpec],
    max_functions: int | None = None,
    ig_steps: int = 16,
    n_boot: int = 1000,
    seed: int = 0,
    ignore_whitespace: bool = True,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Line-localisation figures of every model on the fixes in ``data``.

    Returns:
        (the results document written to ``localisation.json``, one row per measured function
        for ``functions.jsonl``).
    """
    if not models:
        raise ValueError("no model to measure: give --model-dir or --registry")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must differ, got {names} (use NAME=DIR)")
    cases, counts = load_fix_cases(data)
    targets, target_counts = build_targets(cases, ignore_whitespace)
    measured = sample_targets(targets, max_functions, seed)
    counts = {**counts, **target_counts, "measured": len(measured)}

    texts = sorted({t.case.before for t in measured})
    text_index = {text: i for i, text in enumerate(texts)}
    crash = np.asarray([t.case.in_crash_state for t in measured], dtype=bool)
    n_code = np.asarray([len(t.candidates) for t in measured], dtype=np.float64)
    n_ref = np.asarray([int(t.is_reference.sum()) for t in measured], dtype=np.float64)
    references = [reference_metrics(t) for t in measured]
    headline = TOP_KS.index(HEADLINE_K)
    rows: list[dict[str, Any]] = [
        {
            "pair_ids": list(t.case.pair_ids),
            "project": t.case.project,
            "in_crash_state": t.case.in_crash_state,
            "n_code_lines": len(t.candidates),
            "reference_lines": [int(i) + 1 for i in t.candidates[t.is_reference]],
            "references": {
                name: {"first_rank": rank, "top10": float(hits[headline])}
                for name, (hits, rank) in ref.items()
            },
            "models": {},
        }
        for t, ref in zip(measured, references, strict=True)
    ]
    reference_arrays: dict[str, np.ndarray] = {}
    for name in REFERENCES:
        reference_arrays[f"{name}_hits"] = np.asarray(
            [ref[name][0] for ref in references], dtype=np.float64
        ).reshape(-1, len(TOP_KS))
        reference_arrays[f"{name}_rank"] = np.asarray(
            [ref[name][1] for ref in references], dtype=np.float64
        )

    results: list[dict[str, Any]] = []
    for spec in models:
        scores, probabilities, threshold, facts = explain_functions(spec, texts, ig_steps, progress)
        entry: dict[str, Any] = {"name": spec.name, "model_dir": str(spec.model_dir), **facts}
        prob = np.asarray([probabilities[text_index[t.case.before]] for t in measured])
        flagged = prob >= threshold
        entry["flagged_share"] = float(flagged.mean()) if len(measured) else None
        if not facts["explains_lines"]:
            entry["subsets"] = None  # no per-line signal: nothing to rank
            results.append(entry)
            for row, p in zip(rows, prob, strict=True):
                row["models"][spec.name] = {"probability": float(p)}
            continue
        model_hits, model_rank = [], []
        for row, t, p in zip(rows, measured, prob, strict=True):
            line_scores = scores[text_index[t.case.before]]
            hits, rank = rank_metrics(line_scores[t.candidates], t.is_reference)
            model_hits.append(hits)
            model_rank.append(rank)
            row["models"][spec.name] = {
                "probability": float(p),
                "first_rank": rank,
                "top10": float(hits[headline]),
            }
        per_function = {
            "model_hits": np.asarray(model_hits, dtype=np.float64).reshape(-1, len(TOP_KS)),
            "model_rank": np.asarray(model_rank, dtype=np.float64),
            **reference_arrays,
            "n_code_lines": n_code,
            "n_reference": n_ref,
        }
        masks = {
            "all": np.ones(len(measured), dtype=bool),
            "in_crash_state": crash,
            "flagged": flagged,
        }
        entry["subsets"] = {
            name: summarise({key: value[mask] for key, value in per_function.items()}, n_boot, seed)
            for name, mask in masks.items()
        }
        results.append(entry)

    document = {
        "data": str(data),
        "reference": "lines of the pre-fix function that the fix deletes or modifies (LineVul's "
        "flaw lines), among its code lines; insertion-only fixes left out",
        "settings": {
            "max_functions": max_functions,
            "ig_steps": ig_steps,
            "n_boot": n_boot,
            "null_draws": NULL_DRAWS,
            "seed": seed,
            "ignore_whitespace": ignore_whitespace,
            "top_ks": list(TOP_KS),
            "tie_breaking": "uniformly random, exact expectation",
        },
        "counts": {**counts, "in_crash_state": int(crash.sum()), "distinct_texts": len(texts)},
        "models": results,
    }
    return document, rows


# --------------------------------------------------------------------------- report


def _ci(cell: dict[str, Any], digits: int = 3) -> str:
    return (
        f"{cell['estimate']:.{digits}f} [{cell['ci95_low']:.{digits}f}, "
        f"{cell['ci95_high']:.{digits}f}]"
    )


def _delta(cell: dict[str, Any], digits: int = 3) -> str:
    return (
        f"{cell['difference']:+.{digits}f} [{cell['ci95_low']:+.{digits}f}, "
        f"{cell['ci95_high']:+.{digits}f}]"
    )


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    if value <= 1.0 / (NULL_DRAWS + 1) + 1e-12:  # no null draw as extreme
        return f"≤ {1.0 / (NULL_DRAWS + 1):.0e}"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def markdown_table(document: dict[str, Any]) -> str:
    """The headline figures: top-10 accuracy and first changed-line rank per model and subset,
    beside the three references."""
    k = str(HEADLINE_K)
    lines = [
        f"| model | subset | functions | top-{k} acc. [95% CI] | random | first lines "
        "| longest lines | Δ vs random [95% CI], p | mean first rank [95% CI] | median "
        "| random | first lines | longest lines | Δ vs random [95% CI], p |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    empty = " |" * 11
    for entry in document["models"]:
        if not entry["subsets"]:
            lines.append(f"| {entry['name']} | – | – | no per-line signal |{empty}")
            continue
        for subset in SUBSETS:
            s = entry["subsets"][subset]
            if not s["n_functions"]:
                lines.append(f"| {entry['name']} | {subset} | 0 |{empty}")
                continue
            top, rank = s["top_k"][k], s["first_rank"]
            dt, dr = top["model_minus_random"], rank["model_minus_random"]
            top_refs = " | ".join(f"{top[name]['estimate']:.3f}" for name in REFERENCES)
            rank_refs = " | ".join(f"{rank[name]['estimate']:.1f}" for name in REFERENCES)
            lines.append(
                f"| {entry['name']} | {subset} | {s['n_functions']} | {_ci(top['model'])} "
                f"| {top_refs} | {_delta(dt)}, p {_p(dt['p_random_order'])} "
                f"| {_ci(rank['model'], 1)} | {rank['model']['median']:.1f} | {rank_refs} "
                f"| {_delta(dr, 1)}, p {_p(dr['p_random_order'])} |"
            )
    c = document["counts"]
    lines.append("")
    lines.append(
        f"{c['measured']} of {c['targets']} functions measured ({c['changes']} distinct changes "
        f"from {c['pre_fix_rows']} pre-fix rows; left out: {c['insertion_only']} insertion-only "
        f"fixes, {c['reference_not_code']} changing only blank/brace lines, {c['unpaired']} "
        f"unpaired; {c['repeats']} repeated rows measured once). Ties in line scores broken at "
        "random (exact expectation); ranks are 1-based among code lines; p: two-sided Monte Carlo "
        f"test against random order ({document['settings']['null_draws']:,} draws)."
    )
    return "\n".join(lines) + "\n"


def write_outputs(
    document: dict[str, Any], rows: list[dict[str, Any]], output: str | Path
) -> MeasurePaths:
    """Write ``localisation.json``, ``localisation.md`` and ``functions.jsonl`` under ``output``."""
    from streamguard_core.io import atomic_write_json, atomic_write_text, write_jsonl

    paths = MeasurePaths(Path(output))
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.results, document)
    atomic_write_text(paths.table, markdown_table(document))
    write_jsonl(paths.functions, rows)
    return paths


# --------------------------------------------------------------------------- CLI

DESCRIPTION = """\
Measure how well each model's explainer finds the lines a real fix changed. For every
pre-fix function of an OSS-Fuzz fixes file (target 1, its post-fix partner shares the pair_id)
the reference is the lines the fix deleted or modified (LineVul's flaw lines; insertion-only
fixes are left out, counted). The explainer's line scores rank the function's code lines;
reported: top-1/3/5/10 accuracy and the rank of the first changed line, against a random
order and the first lines of the function, overall, for in_crash_state functions and for the
functions the model flags, with bootstrap 95% intervals and a test against random order
(p: Monte Carlo, 10,000 random-order explainers).

  streamguard explain-eval --data ../shared/data/ossfuzz_fixes.jsonl.gz \\
      --registry runs/full/registry --model-dir chars=runs/full/chars/seed_42/model \\
      --max-functions 300 --output runs/localise

Writes OUTPUT/localisation.json, OUTPUT/localisation.md and OUTPUT/functions.jsonl.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_explain_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``streamguard explain-eval``."""
    from streamguard_core.evaluation.stats import DEFAULT_N_BOOT

    parser = subparsers.add_parser(
        "explain-eval",
        help="measure line localisation of the explainers on real fixes (OSS-Fuzz)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        required=True,
        help="fixes JSONL(.gz) with func, target, pair_id, in_crash_state, "
        "project (e.g. ../shared/data/ossfuzz_fixes.jsonl.gz)",
    )
    parser.add_argument(
        "--model-dir",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="a saved detector (repeatable); NAME defaults to the model card's name or kind",
    )
    parser.add_argument(
        "--registry",
        default=None,
        help="also measure this registry's production model (named 'production')",
    )
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument(
        "--max-functions",
        type=_positive_int,
        default=None,
        help="a seeded uniform sample of this many functions (default: all)",
    )
    parser.add_argument(
        "--ig-steps",
        type=_positive_int,
        default=16,
        help="integrated-gradients steps of the neural explainers",
    )
    parser.add_argument(
        "--bootstrap",
        type=_positive_int,
        default=DEFAULT_N_BOOT,
        help="bootstrap resamples of the intervals",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and bootstrap")
    parser.add_argument(
        "--keep-whitespace",
        action="store_true",
        help="a line whose only change is whitespace counts as changed",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_explain_eval)
    return parser


def cmd_explain_eval(args: argparse.Namespace) -> int:
    """Run ``streamguard explain-eval``; print the table and where the files went."""
    specs = [parse_model_spec(text) for text in args.model_dir]
    if args.registry:
        from streamguard_core.scan.cli import resolve_model_dir

        specs.insert(0, ModelSpec("production", Path(resolve_model_dir(None, args.registry))))
    document, rows = measure(
        args.data,
        specs,
        max_functions=args.max_functions,
        ig_steps=args.ig_steps,
        n_boot=args.bootstrap,
        seed=args.seed,
        ignore_whitespace=not args.keep_whitespace,
        progress=not args.no_progress,
    )
    paths = write_outputs(document, rows, args.output)
    print(markdown_table(document), end="")
    print(f"wrote {paths.results}, {paths.table}, {paths.functions}")
    return 0
