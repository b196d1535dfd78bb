"""Train/valid/test assignment and cross-split deduplication (leakage control).

Two steps, both deterministic for a given seed and input order:

* :func:`assign_splits` puts every record into one of :data:`SPLITS` by a strategy
  (CodeXGLUE index files, explicit ``SPLIT=`` inputs, stratified random, whole projects,
  whole groups, or time order). Records that cannot be placed become :class:`Reject` rows
  (``stage="split"``) instead of silently landing in some split.
* :func:`deduplicate` removes exact or normalised duplicates, held-out splits first (test, then
  valid, then train), so a train function that repeats an evaluation function is dropped from
  train and the evaluation sets stay intact. It also returns a JSON-serialisable leakage report.

Record conventions: ``meta["file"]``/``meta["line"]`` locate the record in its input,
``meta["split"]`` is a split given by the user, ``meta["date"]`` an ISO 8601 date for time splits.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from streamguard_core.data.normalize import exact_key, normalized_key
from streamguard_core.schema import FunctionRecord, Reject

SPLITS: tuple[str, str, str] = ("train", "valid", "test")

STRATEGIES = ("auto", "codexglue", "explicit", "random", "project", "group", "time")
DEDUP_MODES = ("none", "exact", "normalized")

# Held-out splits win: a duplicate is kept in the first split of this order that holds it.
_DEDUP_ORDER = ("test", "valid", "train")
# "A<-B": removed from (or, for remaining overlap, present in) A because it duplicates B.
_CROSS_PAIRS = (("train", "valid"), ("train", "test"), ("valid", "test"))

_PREVIEW_CHARS = 120
_REJECT_PREVIEW_CHARS = 200


# --------------------------------------------------------------------------------------------
# CodeXGLUE index files
# --------------------------------------------------------------------------------------------


def load_codexglue_index(directory: str | Path) -> dict[int, str]:
    """Read CodeXGLUE ``train.txt``/``valid.txt``/``test.txt`` (one integer idx a line).

    Returns ``{idx: split}``. Files absent among the three are allowed (no idx for that split),
    but at least one must exist. Blank lines are skipped.

    Raises:
        FileNotFoundError: the directory is missing, or none of the three files exists.
        ValueError: a line is not an integer (names file and line number), or one idx is listed
            in two different split files.
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"CodeXGLUE split directory not found: {path}")
    index: dict[int, str] = {}
    where: dict[int, str] = {}
    found = False
    for split in SPLITS:
        file = path / f"{split}.txt"
        if not file.is_file():
            continue
        found = True
        with open(file, encoding="utf-8") as fh:
            for lineno, raw in enumerate(fh, start=1):
                text = raw.strip()
                if not text:
                    continue
                try:
                    idx = int(text)
                except ValueError:
                    raise ValueError(
                        f"{file}:{lineno}: expected an integer idx, got {text[:50]!r}"
                    ) from None
                previous = index.get(idx)
                if previous is not None and previous != split:
                    raise ValueError(
                        f"{file}:{lineno}: idx {idx} is also listed in {where[idx]} "
                        f"(split {previous!r})"
                    )
                index[idx] = split
                where.setdefault(idx, f"{file}:{lineno}")
    if not found:
        raise FileNotFoundError(
            f"no CodeXGLUE split files (train.txt, valid.txt, test.txt) in {path}"
        )
    return index


# --------------------------------------------------------------------------------------------
# Split assignment
# --------------------------------------------------------------------------------------------


@dataclass
class SplitResult:
    """Records per split (all three keys, input order), the strategy used, rejects, warnings."""

    splits: dict[str, list[FunctionRecord]]
    strategy: str
    rejects: list[Reject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of records per split."""
        return {s: len(self.splits.get(s, [])) for s in SPLITS}


def resolve_strategy(
    records: Sequence[FunctionRecord],
    strategy: str,
    codexglue_index: dict[int, str] | None,
) -> str:
    """The concrete strategy for ``strategy`` (``auto`` resolved).

    ``auto`` -> ``codexglue`` when an index is given, else ``explicit`` when any record carries
    ``meta["split"]``, else ``group`` when every record has a group (Juliet template groups,
    synthetic vulnerable/fixed pairs: members of a group must not straddle splits), else
    ``random`` (stratified). Raises ``ValueError`` for an unknown strategy or for
    ``codexglue`` without an index.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown split strategy {strategy!r}; expected one of {STRATEGIES}")
    if strategy == "auto":
        if codexglue_index is not None:
            return "codexglue"
        if any(r.meta.get("split") is not None for r in records):
            return "explicit"
        if records and all(r.group for r in records):
            return "group"
        return "random"
    if strategy == "codexglue" and codexglue_index is None:
        raise ValueError("split strategy 'codexglue' needs the CodeXGLUE index files")
    return strategy


def assign_splits(
    records: Sequence[FunctionRecord],
    strategy: str = "auto",
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    codexglue_index: dict[int, str] | None = None,
) -> SplitResult:
    """Assign every record to train/valid/test (see the module docstring for the strategies).

    ``ratios`` (train, valid, test) are used by ``random``, ``project``, ``group`` and ``time``;
    they must be >= 0 with train > 0 and are normalised to sum to 1. Within each split the input
    order is kept. Records that cannot be placed are returned as rejects with ``stage="split"``.
    """
    used = resolve_strategy(records, strategy, codexglue_index)
    target = _check_ratios(ratios)
    records = list(records)
    rejects: list[Reject] = []
    warnings: list[str] = []
    context = ""

    if used == "codexglue":
        assert codexglue_index is not None
        assignment = _assign_codexglue(records, codexglue_index, rejects, warnings)
    elif used == "explicit":
        assignment = _assign_explicit(records, rejects)
    elif used == "random":
        assignment = _assign_random(records, target, seed)
    elif used == "project":
        keys = [("project", r.project if r.project is not None else "<none>") for r in records]
        assignment = _assign_groups(records, keys, target, seed)
        context = f", {len(set(keys))} project(s)"
    elif used == "group":
        keys = [("group", r.group) if r.group is not None else ("id", r.id) for r in records]
        assignment = _assign_groups(records, keys, target, seed)
        context = f", {len(set(keys))} group(s)"
    else:  # time
        assignment = _assign_time(records, target, rejects)

    splits: dict[str, list[FunctionRecord]] = {s: [] for s in SPLITS}
    for record, split in zip(records, assignment, strict=True):
        if split is not None:
            splits[split].append(record)

    computed = used in ("random", "project", "group", "time")
    for i, s in enumerate(SPLITS):
        if splits[s] or not records:
            continue
        if computed and target[i] > 0:
            warnings.append(
                f"split {s!r} is empty although its ratio is {target[i]:g} "
                f"(strategy {used!r}, {len(records)} records{context})"
            )
        elif not computed:
            warnings.append(f"split {s!r} is empty (strategy {used!r})")
    return SplitResult(splits=splits, strategy=used, rejects=rejects, warnings=warnings)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(r) for r in ratios)
    if len(values) != 3:
        raise ValueError(f"split ratios need 3 values (train, valid, test), got {ratios!r}")
    if any(not math.isfinite(r) or r < 0 for r in values) or values[0] <= 0:
        raise ValueError(f"split ratios must be >= 0 with train > 0, got {ratios!r}")
    total = sum(values)
    return (values[0] / total, values[1] / total, values[2] / total)


def _location(record: FunctionRecord) -> tuple[str, int]:
    file = record.meta.get("file")
    line = record.meta.get("line")
    try:
        line_no = int(line) if line is not None else 0
    except (TypeError, ValueError):
        line_no = 0
    return (str(file) if file is not None else f"<{record.source}>", line_no)


def _reject(record: FunctionRecord, reason: str, detail: str) -> Reject:
    file, line = _location(record)
    return Reject(
        file=file,
        line=line,
        reason=reason,
        detail=detail,
        record_id=record.id,
        stage="split",
        preview=record.func[:_REJECT_PREVIEW_CHARS],
    )


def _as_idx(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _assign_codexglue(
    records: list[FunctionRecord],
    index: dict[int, str],
    rejects: list[Reject],
    warnings: list[str],
) -> list[str | None]:
    out: list[str | None] = []
    disagree = 0
    example = ""
    for r in records:
        idx = _as_idx(r.idx)
        split = index.get(idx) if idx is not None else None
        if split is None:
            if r.idx is None:
                detail = "record has no idx, so the CodeXGLUE index files cannot place it"
            else:
                detail = f"idx {r.idx} is not in the CodeXGLUE index files"
            rejects.append(_reject(r, "no_split", detail))
            out.append(None)
            continue
        given = r.meta.get("split")
        if given is not None and given != split:
            disagree += 1
            if not example:
                example = f"e.g. {r.id}: given {given!r}, index says {split!r}"
        out.append(split)
    if disagree:
        warnings.append(
            f"{disagree} record(s) carry an explicit split that disagrees with the CodeXGLUE "
            f"index; the index was used ({example})"
        )
    return out


def _assign_explicit(records: list[FunctionRecord], rejects: list[Reject]) -> list[str | None]:
    out: list[str | None] = []
    for r in records:
        split = r.meta.get("split")
        if split in SPLITS:
            out.append(split)
            continue
        if split is None:
            detail = "record has no explicit split (give the input as SPLIT=path)"
        else:
            detail = f"explicit split {split!r} is not one of {', '.join(SPLITS)}"
        rejects.append(_reject(r, "no_split", detail))
        out.append(None)
    return out


def _cut_counts(n: int, target: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, valid, test) counts for ``n`` items: floor for valid/test, train the rest.

    With at least 10 items a split whose ratio is > 0 gets at least one item.
    """
    eps = 1e-9
    n_valid = math.floor(n * target[1] + eps)
    n_test = math.floor(n * target[2] + eps)
    if n >= 10:
        if target[1] > 0 and n_valid == 0:
            n_valid = 1
        if target[2] > 0 and n_test == 0:
            n_test = 1
    n_train = n - n_valid - n_test
    return n_train, n_valid, n_test


def _assign_random(
    records: list[FunctionRecord], target: tuple[float, float, float], seed: int
) -> list[str | None]:
    rng = random.Random(seed)
    by_label: dict[Hashable, list[int]] = {}
    for i, r in enumerate(records):
        by_label.setdefault(r.label, []).append(i)
    out: list[str | None] = [None] * len(records)
    for label in sorted(by_label, key=lambda v: (type(v).__name__, repr(v))):
        members = list(by_label[label])
        rng.shuffle(members)
        n_train, n_valid, _ = _cut_counts(len(members), target)
        for pos, i in enumerate(members):
            if pos < n_train:
                out[i] = "train"
            elif pos < n_train + n_valid:
                out[i] = "valid"
            else:
                out[i] = "test"
    return out


def _assign_groups(
    records: list[FunctionRecord],
    keys: list[tuple[str, Any]],
    target: tuple[float, float, float],
    seed: int,
) -> list[str | None]:
    sizes: dict[tuple[str, Any], int] = {}
    for k in keys:
        sizes[k] = sizes.get(k, 0) + 1
    order = list(sizes)  # first-appearance order, then a seeded shuffle
    random.Random(seed).shuffle(order)
    total = len(records)
    counts = [0, 0, 0]
    where: dict[tuple[str, Any], str] = {}
    candidates = [i for i in range(3) if target[i] > 0]
    for k in order:
        # The split furthest below its target fraction; ties go to the earlier split.
        best = max(candidates, key=lambda i: (target[i] - counts[i] / total, -i))
        counts[best] += sizes[k]
        where[k] = SPLITS[best]
    return [where[k] for k in keys]


def _parse_date(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _assign_time(
    records: list[FunctionRecord],
    target: tuple[float, float, float],
    rejects: list[Reject],
) -> list[str | None]:
    dated: list[tuple[datetime, int]] = []
    for i, r in enumerate(records):
        raw = r.meta.get("date")
        parsed = _parse_date(raw)
        if parsed is None:
            detail = (
                "record has no date for the time split"
                if raw is None or raw == ""
                else f"date {str(raw)[:60]!r} is not ISO 8601"
            )
            rejects.append(_reject(r, "missing_date", detail))
            continue
        dated.append((parsed, i))
    dated.sort()  # by date, ties by input position
    n_train, n_valid, _ = _cut_counts(len(dated), target)
    out: list[str | None] = [None] * len(records)
    for pos, (_, i) in enumerate(dated):
        if pos < n_train:
            out[i] = "train"
        elif pos < n_train + n_valid:
            out[i] = "valid"
        else:
            out[i] = "test"
    return out


# --------------------------------------------------------------------------------------------
# Deduplication
# --------------------------------------------------------------------------------------------


@dataclass
class DedupResult:
    """Kept records per split (input order), one row per removed record, the leakage report."""

    splits: dict[str, list[FunctionRecord]]
    removed: list[dict[str, Any]]
    report: dict[str, Any]


def deduplicate(
    splits: dict[str, list[FunctionRecord]],
    mode: str = "normalized",
    normalized_keys: dict[str, str] | None = None,
    max_examples: int = 10,
) -> DedupResult:
    """Remove duplicate functions within and across splits; report the leakage.

    ``mode``: ``none`` removes nothing (the report still counts cross-split overlaps),
    ``exact`` matches :func:`exact_key`, ``normalized`` matches the exact key or the normalised
    key (comments/whitespace/identifiers/literals abstracted). Held-out splits win: test is
    processed first, then valid, then train; within a split the first occurrence is kept.
    ``normalized_keys`` maps record id -> precomputed normalised key; missing ids are computed.
    """
    if mode not in DEDUP_MODES:
        raise ValueError(f"unknown dedup mode {mode!r}; expected one of {DEDUP_MODES}")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; expected {SPLITS}")
    given_keys = normalized_keys or {}

    def nkey(r: FunctionRecord) -> str:
        key = given_keys.get(r.id)
        return key if key is not None else normalized_key(r.func)

    source = {s: list(splits.get(s) or []) for s in SPLITS}
    ekeys = {s: [exact_key(r.func) for r in source[s]] for s in SPLITS}
    nkeys = {s: [nkey(r) for r in source[s]] for s in SPLITS}

    kept_exact: dict[str, tuple[FunctionRecord, str]] = {}
    kept_norm: dict[str, tuple[FunctionRecord, str]] = {}
    keep_flags: dict[str, list[bool]] = {s: [True] * len(source[s]) for s in SPLITS}
    removed: list[dict[str, Any]] = []
    within = {s: {"exact": 0, "normalized": 0} for s in SPLITS}
    cross = {f"{a}<-{b}": 0 for a, b in _CROSS_PAIRS}
    conflicts = 0

    for split in _DEDUP_ORDER:
        for i, r in enumerate(source[split]):
            ek, nk = ekeys[split][i], nkeys[split][i]
            match: tuple[FunctionRecord, str] | None = None
            kind = ""
            if mode != "none":
                match = kept_exact.get(ek)
                kind = "exact"
                if match is None and mode == "normalized":
                    match = kept_norm.get(nk)
                    kind = "normalized"
            if match is None:
                kept_exact.setdefault(ek, (r, split))
                kept_norm.setdefault(nk, (r, split))
                continue
            keep_flags[split][i] = False
            other, other_split = match
            conflict = r.label != other.label
            conflicts += conflict
            if other_split == split:
                within[split][kind] += 1
            else:
                cross[f"{split}<-{other_split}"] += 1
            file, line = _location(r)
            removed.append(
                {
                    "id": r.id,
                    "split": split,
                    "kind": kind,
                    "duplicate_of": other.id,
                    "duplicate_of_split": other_split,
                    "label_conflict": bool(conflict),
                    "file": file,
                    "line": line,
                    "_func": r.func,
                }
            )

    kept = {s: [r for r, k in zip(source[s], keep_flags[s], strict=True) if k] for s in SPLITS}

    # Overlap that remains after dedup: records of A whose exact or normalised key occurs in B.
    remaining: dict[str, int] = {}
    for a, b in _CROSS_PAIRS:
        b_exact = {k for k, f in zip(ekeys[b], keep_flags[b], strict=True) if f}
        b_norm = {k for k, f in zip(nkeys[b], keep_flags[b], strict=True) if f}
        remaining[f"{a}<-{b}"] = sum(
            1
            for ek, nk, f in zip(ekeys[a], nkeys[a], keep_flags[a], strict=True)
            if f and (ek in b_exact or nk in b_norm)
        )

    # Examples: cross-split removals (the leakage) first, then within-split ones.
    ordered = [row for row in removed if row["split"] != row["duplicate_of_split"]] + [
        row for row in removed if row["split"] == row["duplicate_of_split"]
    ]
    examples = [
        {
            **{k: v for k, v in row.items() if k != "_func"},
            "func_preview": row["_func"][:_PREVIEW_CHARS],
        }
        for row in ordered[: max(0, max_examples)]
    ]
    for row in removed:
        del row["_func"]

    report = {
        "mode": mode,
        "counts_before": {s: len(source[s]) for s in SPLITS},
        "counts_after": {s: len(kept[s]) for s in SPLITS},
        "removed_within_split": within,
        "removed_cross_split": cross,
        "label_conflicts": int(conflicts),
        "cross_split_overlap_remaining": remaining,
        "examples": examples,
        "total_removed": len(removed),
    }
    return DedupResult(splits=kept, removed=removed, report=report)
