"""Merge collected data into phase-1 data: the project split, a distribution check, the inputs.

* :func:`split_projects` holds whole collected projects out as the phase-2 test split (never
  weighted, filtered or trained on), so phase 2 is measured on projects it never saw.
* :func:`distribution_check` compares phase-1 train with the merged train (label ratio, source
  mix, function lengths, projects), with a readable warning per bound of
  :class:`~streamguard_core.config.MergeConfig` that is passed.
* :func:`write_merged_inputs` writes generic JSONL inputs the data loaders read, for a
  preprocessing run with ``split_strategy="explicit"``; that run deduplicates across the merged
  sets (held-out splits win: a collected train function equal to a valid or test function is
  dropped from train) and writes its leakage report.

Files written by :func:`write_merged_inputs` (``out_dir``)::

    train.jsonl          phase-1 train records + weighted collected rows of the train projects
    valid.jsonl          phase-1 valid records
    test.jsonl           phase-1 test records + every collected row of the test projects
    merge_summary.json   rows per split, origin, source and project; the projects of each side
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.config import MergeConfig
from streamguard_core.io import atomic_write_json, read_jsonl, write_jsonl
from streamguard_core.phase2.noise import round_half_up, row_id, row_label

SPLIT_NAMES = ("train", "valid", "test")
SUMMARY_FILE = "merge_summary.json"
ORIGIN_PHASE1 = "phase1"
ORIGIN_COLLECTED = "collected"
# collected-row fields copied into the merged inputs (they land in the record's meta)
_COLLECTED_EXTRAS = (
    "vuln_id",
    "repo",
    "fix_commit",
    "parent_commit",
    "file",
    "function",
    "published",
    "crash_type",
    "in_crash_state",
    "n_changed_functions",
    "fix_is_exact",
    "noise_tier",
    "noise_confidence",
    "provenance",
)
_QUANTILES = (10, 50, 90)


# --------------------------------------------------------------------------- project split


def _project_rank(name: str, seed: int) -> str:
    """A stable pseudo-random rank of a project (the same on every run and machine)."""
    return hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=16).hexdigest()


def split_projects(projects: Iterable[str], config: MergeConfig) -> tuple[list[str], list[str]]:
    """Collected projects for training and for testing (both sorted, disjoint).

    ``config.test_projects`` when given; else the ``round(test_project_fraction * n)`` (half up)
    projects of lowest ``blake2b(f"{split_seed}:{name}")``, at least one when the fraction is
    > 0 and there are two projects or more, and never all of them (one is left to train on).

    Raises:
        ValueError: ``config.test_projects`` names a project that is not among ``projects``.
    """
    names = sorted(set(projects))
    if config.test_projects is not None:
        unknown = sorted(set(config.test_projects) - set(names))
        if unknown:
            raise ValueError(
                f"test_projects names unknown project(s) {unknown}; the collected projects are "
                f"{names}"
            )
        test = sorted(set(config.test_projects))
    else:
        n = len(names)
        k = round_half_up(config.test_project_fraction * n)
        if config.test_project_fraction > 0 and n >= 2:
            k = max(k, 1)
        k = min(k, max(n - 1, 0))
        ranked = sorted(names, key=lambda name: _project_rank(name, config.split_seed))
        test = sorted(ranked[:k])
    held = set(test)
    return [p for p in names if p not in held], test


# --------------------------------------------------------------------------- distribution check


def _weight(row: dict[str, Any]) -> float:
    value = row.get("weight")
    return 1.0 if value is None else float(value)


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.get("meta")
    return meta if isinstance(meta, dict) else {}


def _source(row: dict[str, Any]) -> str:
    """Where a row came from: a loaded merged record keeps its original source in meta."""
    meta = _meta(row)
    return str(meta.get("source") or row.get("source") or "unknown")


def _origin(row: dict[str, Any], phase1_ids: set[str]) -> str:
    meta = _meta(row)
    origin = row.get("origin") or meta.get("origin")
    if origin:
        return str(origin)
    return ORIGIN_PHASE1 if str(row.get("id")) in phase1_ids else ORIGIN_COLLECTED


def _shares(keys: list[str], weights: np.ndarray) -> dict[str, float]:
    total = float(weights.sum())
    sums: dict[str, float] = defaultdict(float)
    for key, w in zip(keys, weights.tolist(), strict=True):
        sums[key] += w
    return {k: (v / total if total > 0 else 0.0) for k, v in sorted(sums.items())}


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    """p10/p50/p90 of the weighted distribution (lowest value whose weighted ECDF reaches q)."""
    if not len(values) or weights.sum() <= 0:
        return {f"p{q}": None for q in _QUANTILES}
    order = np.argsort(values, kind="mergesort")
    cdf = np.cumsum(weights[order]) / weights.sum()
    out: dict[str, float | None] = {}
    for q in _QUANTILES:
        at = int(np.searchsorted(cdf, q / 100 - 1e-12, side="left"))
        out[f"p{q}"] = float(values[order][min(at, len(values) - 1)])
    return out


def weighted_ks(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of weighted samples: the largest gap between
    the weighted ECDFs (with unit weights, scipy's ``ks_2samp`` statistic)."""
    if not len(a) or not len(b) or wa.sum() <= 0 or wb.sum() <= 0:
        return 0.0
    grid = np.union1d(a, b)

    def ecdf(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        cum = np.cumsum(w[order]) / w.sum()
        at = np.searchsorted(x[order], grid, side="right")
        return np.where(at > 0, cum[np.maximum(at - 1, 0)], 0.0)

    return float(np.max(np.abs(ecdf(a, wa) - ecdf(b, wb))))


def _side(rows: list[dict[str, Any]], phase1_ids: set[str]) -> dict[str, Any]:
    weights = np.asarray([_weight(r) for r in rows], dtype=np.float64)
    labels = np.asarray([row_label(r) for r in rows], dtype=np.float64)
    lengths = np.asarray([len(r.get("func") or "") for r in rows], dtype=np.float64)
    total = float(weights.sum())
    return {
        "weights": weights,
        "lengths": lengths,
        "n": len(rows),
        "weight_sum": total,
        "vulnerable_share": float(weights @ labels / total) if total > 0 else None,
        "sources": _shares([_source(r) for r in rows], weights),
        "origins": _shares([_origin(r, phase1_ids) for r in rows], weights),
        "projects": _shares([str(r.get("project") or "<none>") for r in rows], weights),
    }


def distribution_check(
    phase1_train: list[dict[str, Any]], merged_train: list[dict[str, Any]], config: MergeConfig
) -> dict[str, Any]:
    """Phase-1 train against the merged train, every share weighted by the rows' ``weight``.

    Rows are phase-1 records (``label``, ``source``) or merged input rows (``target``,
    ``origin``); a merged row is collected when its ``origin`` says so, else when its id is not
    a phase-1 train id.

    Returns:
        ``label`` (vulnerable share before/after and the shift), ``sources`` (shares before and
        after, ``collected_share``: the weight share of collected rows after), ``length``
        (characters: p10/p50/p90 before/after, the weighted KS statistic, and scipy's
        unweighted KS statistic and p), ``projects`` (shares before/after, total-variation
        distance), ``counts``, ``bounds`` and ``warnings`` (one sentence per bound passed).
    """
    phase1_ids = {str(r.get("id")) for r in phase1_train}
    before, after = _side(phase1_train, phase1_ids), _side(merged_train, phase1_ids)
    shift = (
        after["vulnerable_share"] - before["vulnerable_share"]
        if before["vulnerable_share"] is not None and after["vulnerable_share"] is not None
        else None
    )
    ks = weighted_ks(before["lengths"], before["weights"], after["lengths"], after["weights"])
    ks_unweighted: dict[str, float | None] = {"statistic": None, "p_value": None}
    if len(before["lengths"]) and len(after["lengths"]):
        from scipy.stats import ks_2samp

        test = ks_2samp(before["lengths"], after["lengths"])
        ks_unweighted = {"statistic": float(test.statistic), "p_value": float(test.pvalue)}
    projects = sorted(set(before["projects"]) | set(after["projects"]))
    tv = 0.5 * sum(
        abs(after["projects"].get(p, 0.0) - before["projects"].get(p, 0.0)) for p in projects
    )
    collected_share = after["origins"].get(ORIGIN_COLLECTED, 0.0)
    warnings = []
    if shift is not None and abs(shift) > config.max_label_shift:
        warnings.append(
            f"the vulnerable share of train moves from {before['vulnerable_share']:.3f} to "
            f"{after['vulnerable_share']:.3f} (shift {shift:+.3f}), beyond the bound "
            f"max_label_shift {config.max_label_shift:g}"
        )
    if ks > config.max_length_ks:
        warnings.append(
            f"function lengths shift: KS statistic {ks:.3f} between phase-1 and merged train "
            f"(median {_median_text(before)} -> {_median_text(after)} characters), beyond the "
            f"bound max_length_ks {config.max_length_ks:g}"
        )
    if collected_share > config.max_collected_share:
        warnings.append(
            f"collected rows carry a share {collected_share:.3f} of the merged train's weight, "
            f"beyond the bound max_collected_share {config.max_collected_share:g}"
        )
    if tv > config.max_project_tv:
        warnings.append(
            f"the project mix of train changes: total-variation distance {tv:.3f}, beyond the "
            f"bound max_project_tv {config.max_project_tv:g}"
        )
    return {
        "counts": {
            "before": {"rows": before["n"], "weight": before["weight_sum"]},
            "after": {"rows": after["n"], "weight": after["weight_sum"]},
        },
        "label": {
            "before": before["vulnerable_share"],
            "after": after["vulnerable_share"],
            "shift": shift,
        },
        "sources": {
            "before": before["sources"],
            "after": after["sources"],
            "collected_share": collected_share,
        },
        "length": {
            "before": _weighted_quantiles(before["lengths"], before["weights"]),
            "after": _weighted_quantiles(after["lengths"], after["weights"]),
            "ks": ks,
            "ks_unweighted": ks_unweighted,
        },
        "projects": {"before": before["projects"], "after": after["projects"], "tv": tv},
        "bounds": {
            "max_label_shift": config.max_label_shift,
            "max_length_ks": config.max_length_ks,
            "max_collected_share": config.max_collected_share,
            "max_project_tv": config.max_project_tv,
        },
        "warnings": warnings,
    }


def _median_text(side: dict[str, Any]) -> str:
    """The weighted median length of one side, for a sentence."""
    p50 = _weighted_quantiles(side["lengths"], side["weights"])["p50"]
    return "n/a" if p50 is None else f"{p50:.0f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def distribution_markdown(check: dict[str, Any], top_projects: int = 15) -> str:
    """The check as markdown: warnings first, then label, sources, lengths and projects."""
    label, length, bounds = check["label"], check["length"], check["bounds"]
    lines = ["## Distribution check: phase-1 train vs merged train", ""]
    if check["warnings"]:
        lines += ["**Warnings**", ""] + [f"- ⚠ {w}" for w in check["warnings"]] + [""]
    else:
        lines += ["No bound passed.", ""]
    c = check["counts"]
    lines += [
        "| measure | phase-1 train | merged train | change | bound |",
        "|---|---:|---:|---:|---:|",
        f"| rows | {c['before']['rows']} | {c['after']['rows']} | "
        f"{c['after']['rows'] - c['before']['rows']:+d} | |",
        f"| total weight | {c['before']['weight']:.1f} | {c['after']['weight']:.1f} | "
        f"{c['after']['weight'] - c['before']['weight']:+.1f} | |",
        f"| vulnerable share | {_share(label['before'])} | {_share(label['after'])} | "
        f"{_num(label['shift'], '+.3f')} | ±{bounds['max_label_shift']:g} |",
        f"| collected share | 0.0% | {_share(check['sources']['collected_share'])} | | "
        f"{bounds['max_collected_share']:.0%} |",
        f"| length KS (weighted) | | | {length['ks']:.3f} | {bounds['max_length_ks']:g} |",
        f"| project TV distance | | | {check['projects']['tv']:.3f} | "
        f"{bounds['max_project_tv']:g} |",
        "",
        "| length (characters) | phase-1 train | merged train |",
        "|---|---:|---:|",
    ]
    for q in _QUANTILES:
        key = f"p{q}"
        before, after = length["before"][key], length["after"][key]
        lines.append(f"| {key} | {_num(before, '.0f')} | {_num(after, '.0f')} |")
    lines += ["", "| source | phase-1 train | merged train |", "|---|---:|---:|"]
    sources = check["sources"]
    for name in sorted(set(sources["before"]) | set(sources["after"])):
        lines.append(
            f"| {name} | {_share(sources['before'].get(name, 0.0))} | "
            f"{_share(sources['after'].get(name, 0.0))} |"
        )
    projects = check["projects"]
    names = sorted(
        set(projects["before"]) | set(projects["after"]),
        key=lambda p: (-projects["after"].get(p, 0.0), p),
    )
    lines += [
        "",
        f"| project (top {min(top_projects, len(names))} of {len(names)}) | phase-1 train | "
        "merged train |",
        "|---|---:|---:|",
    ]
    for name in names[:top_projects]:
        lines.append(
            f"| {name} | {_share(projects['before'].get(name, 0.0))} | "
            f"{_share(projects['after'].get(name, 0.0))} |"
        )
    return "\n".join(lines).rstrip() + "\n"


def distribution_plot(
    phase1_train: list[dict[str, Any]], merged_train: list[dict[str, Any]], path: str | Path
) -> Path:
    """A PNG of the function-length distributions (log-spaced bins, each bin's share of the
    weight) of phase-1 train, the merged train and its collected rows alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phase1_ids = {str(r.get("id")) for r in phase1_train}
    sides = {
        "phase-1 train": phase1_train,
        "merged train": merged_train,
        "collected rows of the merged train": [
            r for r in merged_train if _origin(r, phase1_ids) == ORIGIN_COLLECTED
        ],
    }
    lengths = {
        name: np.asarray([max(len(r.get("func") or ""), 1) for r in rows])
        for name, rows in sides.items()
    }
    present = [v for v in lengths.values() if len(v)]
    low = min((int(v.min()) for v in present), default=1)
    top = max((int(v.max()) for v in present), default=10)
    bins = np.logspace(math.log10(low), math.log10(max(top, low + 1)), 40)
    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, rows), style in zip(sides.items(), ("-", "--", ":"), strict=True):
        weights = np.asarray([_weight(r) for r in rows], dtype=np.float64)
        if rows and weights.sum() > 0:
            ax.hist(
                lengths[name],
                bins=bins.tolist(),
                weights=weights / weights.sum(),
                histtype="step",
                label=f"{name} ({len(rows)})",
                linewidth=1.5,
                linestyle=style,
            )
    ax.set_xscale("log")
    ax.set_xlabel("function length (characters)")
    ax.set_ylabel("share of the weight per bin")
    ax.set_title("Function lengths before and after the merge")
    ax.legend(loc="upper left", fontsize="small")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- merged inputs


def _phase1_input(record: dict[str, Any]) -> dict[str, Any]:
    """A processed phase-1 record as a generic JSONL input row (label -> target)."""
    meta = _meta(record)
    row = {
        "id": record["id"],
        "func": record["func"],
        "target": row_label(record),
        "source": record.get("source"),
        "origin": ORIGIN_PHASE1,
        "project": record.get("project"),
        "commit_id": record.get("commit_id"),
        "cwe": record.get("cwe"),
        "idx": record.get("idx"),
        "group": record.get("group"),
        "weight": _weight(record),
    }
    if meta.get("language") in ("c", "cpp"):
        row["language"] = meta["language"]
    return row


def _collected_input(row: dict[str, Any], weighted: bool) -> dict[str, Any]:
    """A collected row as a generic JSONL input row (its weight only when ``weighted``)."""
    if weighted and row.get("weight") is None:
        raise ValueError(f"weighted collected row {row_id(row)!r} has no weight")
    out = {
        "id": row_id(row),
        "func": row["func"],
        "target": row_label(row),
        "source": row.get("source") or ORIGIN_COLLECTED,
        "origin": ORIGIN_COLLECTED,
        "project": row.get("project"),
        "commit_id": row.get("commit_id") or row.get("fix_commit"),
        "cwe": row.get("cwe"),
        "group": row.get("pair_id"),
        "weight": float(row["weight"]) if weighted else 1.0,
    }
    out.update({k: row[k] for k in _COLLECTED_EXTRAS if row.get(k) is not None})
    if not weighted:
        out.pop("noise_tier", None)
        out.pop("noise_confidence", None)
    return out


def _read_split(data_dir: Path, split: str) -> Iterator[dict[str, Any]]:
    path = data_dir / split / "records.jsonl"
    if path.is_file():
        yield from read_jsonl(path)


def _unique(rows: Iterable[dict[str, Any]], duplicates: Counter[str], split: str) -> Iterator[Any]:
    """Rows with an id not seen before in the split (later repeats are counted, not written)."""
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            duplicates[split] += 1
            continue
        seen.add(row["id"])
        yield row


def write_merged_inputs(
    phase1_data_dir: str | Path,
    weighted_rows: list[dict[str, Any]],
    test_rows: list[dict[str, Any]],
    out_dir: str | Path,
) -> dict[str, str]:
    """Write ``train``/``valid``/``test.jsonl`` (generic JSONL) and ``merge_summary.json``.

    Phase-1 records keep their id, source, project and weight (``label`` becomes ``target``);
    collected rows keep their id (``row_id``), get ``group`` = their ``pair_id`` and carry
    their fix provenance and noise tier as extra fields (which the loader keeps in ``meta``).
    Every row has ``origin`` (``phase1`` or ``collected``). Test rows are written unweighted.
    A row whose id repeats an earlier one of the same split is counted in the summary's
    ``duplicate_ids`` and not written. Note that the generic loader prefixes ids with the file
    stem (``train:<id>``).

    Args:
        phase1_data_dir: a processed phase-1 data set (``<split>/records.jsonl``).
        weighted_rows: collected rows of the train projects that survived the noise reduction,
            each with its ``weight``.
        test_rows: every collected row of the test projects.
        out_dir: where the files go.

    Returns:
        ``{split: path}`` of the splits that hold at least one row.

    Raises:
        ValueError: a project has rows in both ``weighted_rows`` and ``test_rows``, or a
            weighted row has no weight.
    """
    data_dir, out = Path(phase1_data_dir), Path(out_dir)
    leaked = sorted(
        {str(r.get("project")) for r in weighted_rows} & {str(r.get("project")) for r in test_rows}
    )
    if leaked:
        raise ValueError(f"project(s) {leaked} have rows in both the train and the test side")
    collected_train = [_collected_input(r, weighted=True) for r in weighted_rows]
    collected_test = [_collected_input(r, weighted=False) for r in test_rows]
    sources: dict[str, Iterable[dict[str, Any]]] = {
        "train": (
            *(_phase1_input(r) for r in _read_split(data_dir, "train")),
            *collected_train,
        ),
        "valid": [_phase1_input(r) for r in _read_split(data_dir, "valid")],
        "test": (
            *(_phase1_input(r) for r in _read_split(data_dir, "test")),
            *collected_test,
        ),
    }
    duplicates: Counter[str] = Counter()
    paths: dict[str, str] = {}
    summary: dict[str, Any] = {"phase1_data_dir": str(data_dir), "splits": {}}
    for split in SPLIT_NAMES:
        rows = list(_unique(sources[split], duplicates, split))
        path = out / f"{split}.jsonl"
        write_jsonl(path, rows)
        if rows:
            paths[split] = str(path)
        summary["splits"][split] = _split_summary(rows, str(path))
    summary["duplicate_ids"] = dict(duplicates)
    summary["collected_projects"] = {
        "train": sorted({str(r.get("project")) for r in weighted_rows}),
        "test": sorted({str(r.get("project")) for r in test_rows}),
    }
    atomic_write_json(out / SUMMARY_FILE, summary)
    return paths


def _split_summary(rows: list[dict[str, Any]], path: str) -> dict[str, Any]:
    weights = [float(r["weight"]) for r in rows]
    return {
        "path": path,
        "rows": len(rows),
        "weight": float(sum(weights)),
        "vulnerable": sum(r["target"] for r in rows),
        "per_origin": dict(sorted(Counter(r["origin"] for r in rows).items())),
        "per_source": dict(sorted(Counter(str(r["source"]) for r in rows).items())),
        "per_project": dict(sorted(Counter(str(r["project"]) for r in rows).items())),
    }
