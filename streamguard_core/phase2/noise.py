"""Noise reduction: weight collected functions by how confidently phase 1 confirms their label.

A fix commit also touches functions that were never vulnerable, so the labels of collected data
are noisy. Every phase-1 model x seed scores the collected functions; the ensemble's confidence
that a row's label is right (:func:`label_confidence`), optionally moved by noise signals used
as priors (:func:`apply_priors`), puts the row in a tier (:func:`assign_weights`, thresholds and
weights from :class:`~streamguard_core.config.NoiseConfig`)::

    high      confidence >  high_confidence                       weight high_weight
    mid       mid_confidence <= confidence <= high_confidence     weight mid_weight
    sampled   a seeded sample of rest_fraction of the rest        weight rest_weight
    dropped   the other rows of the rest                          weight 0 (written, counted)

Nothing is lost: kept rows go to the weighted file (:func:`write_weighted`), dropped rows to
the dropped file with their reason (:func:`write_dropped`), and :func:`noise_report` counts
both per tier, source, project and label.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.collect.records import function_id, pair_id
from streamguard_core.config import NoiseConfig
from streamguard_core.io import write_jsonl

TIERS: tuple[str, str, str, str] = ("high", "mid", "sampled", "dropped")
KEPT_TIERS: tuple[str, str, str] = ("high", "mid", "sampled")
DROP_REASON = "low_confidence"
"""Reason code of a dropped row (confidence below ``mid_confidence``, not in the sample)."""
_PRIOR_FIELDS = {
    "in_crash_state": ("crash_state_prior", "in_crash_state is true"),
    "single_change": ("single_change_prior", "n_changed_functions == 1"),
}


@dataclass(slots=True)
class NoiseResult:
    """Per row (input order): confidence in its label, its tier and its loss weight."""

    confidence: np.ndarray
    tier: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.tier)


# --------------------------------------------------------------------------- confidence


def row_label(row: dict[str, Any]) -> int:
    """The 0/1 label of a collected row (``target``) or a record (``label``)."""
    value = row.get("target", row.get("label"))
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(f"row {row.get('id')!r}: label {value!r} is not 0/1")
    return int(value)


def row_id(row: dict[str, Any]) -> str:
    """A row's id: its ``id``, else :func:`~streamguard_core.collect.records.function_id` of
    its fields (rows of the shared OSS-Fuzz fixes carry no id and name the advisory
    ``osv_id``)."""
    if row.get("id") not in (None, ""):
        return str(row["id"])
    vuln = str(row.get("vuln_id") or row.get("osv_id") or "?")
    pair = row.get("pair_id") or pair_id(
        str(row.get("repo")),
        str(row.get("fix_commit")),
        str(row.get("file")),
        str(row.get("function")),
        vuln,
    )
    return function_id(str(row.get("source") or "collected"), vuln, pair, row_label(row))


def label_confidence(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Mean over scorers of the probability they give the row's label.

    Args:
        labels: ``(n,)`` 0/1 labels (1 = vulnerable).
        probabilities: ``(n_scorers, n)`` P(vulnerable) of every scorer (a ``(n,)`` array is
            one scorer).

    Returns:
        ``(n,)``: mean of ``p`` where the label is 1 and of ``1 - p`` where it is 0.

    Raises:
        ValueError: shapes disagree, labels are not 0/1, probabilities outside [0, 1] or NaN.
    """
    y = np.asarray(labels)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[None, :]
    if y.ndim != 1 or probs.ndim != 2 or probs.shape[1] != y.shape[0]:
        raise ValueError(
            f"need labels (n,) and probabilities (n_scorers, n); got {y.shape} and {probs.shape}"
        )
    if probs.shape[0] == 0:
        raise ValueError("no scorer: probabilities has no rows")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (1 = vulnerable)")
    if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
        raise ValueError("probabilities must be finite and in [0, 1]")
    agree = np.where(y[None, :] == 1, probs, 1.0 - probs)
    return np.asarray(agree.mean(axis=0), dtype=np.float64)


def _has_signal(row: dict[str, Any], prior: str) -> bool:
    if prior == "in_crash_state":
        return row.get("in_crash_state") is True
    return row.get("n_changed_functions") == 1


def apply_priors(
    confidence: np.ndarray, rows: list[dict[str, Any]], config: NoiseConfig
) -> np.ndarray:
    """The confidence moved by the noise signals of ``config.priors`` (a Bayes odds update).

    The ensemble confidence ``c`` is read as the probability that the label is right under a
    flat prior (odds 1). A row carrying a signal has prior probability ``q`` of a right label
    (``in_crash_state`` true: ``crash_state_prior``; ``n_changed_functions == 1``:
    ``single_change_prior``), so its odds are multiplied by ``q / (1 - q)``; the signals are
    treated as independent, so a row with both gets both factors. A row without a signal (false
    or unknown) keeps its confidence: the priors only ever raise a row with a signal above 0.5
    odds. Computed as ``c q / (c q + (1 - c)(1 - q))``, exact at ``c`` = 0 or 1.

    Returns:
        A new ``(n,)`` array; ``confidence`` is not modified.
    """
    out = np.asarray(confidence, dtype=np.float64).copy()
    if len(rows) != len(out):
        raise ValueError(f"{len(rows)} rows but {len(out)} confidences")
    for prior in config.priors:
        q = float(getattr(config, _PRIOR_FIELDS[prior][0]))
        mask = np.fromiter((_has_signal(r, prior) for r in rows), dtype=bool, count=len(rows))
        c = out[mask]
        out[mask] = c * q / (c * q + (1.0 - c) * (1.0 - q))
    return out


def round_half_up(value: float) -> int:
    """``value`` rounded to the nearest integer, halves up (2.5 -> 3, unlike ``round``)."""
    return math.floor(value + 0.5)


def assign_weights(
    rows: list[dict[str, Any]], probabilities: np.ndarray, config: NoiseConfig
) -> NoiseResult:
    """Tier and weight of every row from the phase-1 ensemble's confidence in its label.

    ``confidence > high_confidence`` -> ``high``; ``mid_confidence <= c <= high_confidence`` ->
    ``mid``; of the ``n_rest`` other rows, ``round(rest_fraction * n_rest)`` (half up) drawn
    without replacement by ``numpy.random.default_rng(config.seed)`` -> ``sampled``, the others
    ``dropped`` (weight 0). The draw runs over the rest ordered by row id, so the same rows and
    seed give the same sample whatever their input order.

    Args:
        rows: collected rows (``CollectedFunction.to_dict()``), label in ``target``.
        probabilities: ``(n_scorers, n)`` P(vulnerable) of every phase-1 model x seed.
        config: thresholds, weights, the sample's seed and the priors.
    """
    labels = np.asarray([row_label(r) for r in rows], dtype=np.int64)
    confidence = label_confidence(labels, probabilities)
    if config.priors:
        confidence = apply_priors(confidence, rows, config)
    n = len(rows)
    tier = np.full(n, "dropped", dtype=object)
    weight = np.zeros(n, dtype=np.float64)
    high = confidence > config.high_confidence
    mid = ~high & (confidence >= config.mid_confidence)
    tier[high], weight[high] = "high", config.high_weight
    tier[mid], weight[mid] = "mid", config.mid_weight
    rest = np.flatnonzero(~high & ~mid)
    rest = rest[np.argsort([row_id(rows[i]) for i in rest], kind="mergesort")]
    n_sample = min(len(rest), round_half_up(config.rest_fraction * len(rest)))
    if n_sample:
        chosen = np.random.default_rng(config.seed).choice(len(rest), n_sample, replace=False)
        picked = rest[chosen]
        tier[picked], weight[picked] = "sampled", config.rest_weight
    return NoiseResult(confidence=confidence, tier=tier.astype(str), weight=weight)


# --------------------------------------------------------------------------- report


def _signal_share(rows: list[dict[str, Any]], prior: str) -> float | None:
    """Share of rows carrying the signal, among rows where it is known; None when none is."""
    key = "in_crash_state" if prior == "in_crash_state" else "n_changed_functions"
    known = [r for r in rows if r.get(key) is not None]
    if not known:
        return None
    return sum(_has_signal(r, prior) for r in known) / len(known)


def _breakdown(keys: list[str], result: NoiseResult) -> dict[str, dict[str, Any]]:
    """Per key: rows, count per tier, kept, total weight and mean confidence."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(groups):
        idx = np.asarray(groups[key])
        tiers = Counter(result.tier[idx].tolist())
        out[key] = {
            "n": len(idx),
            **{t: tiers.get(t, 0) for t in TIERS},
            "kept": len(idx) - tiers.get("dropped", 0),
            "weight_sum": float(result.weight[idx].sum()),
            "mean_confidence": float(result.confidence[idx].mean()),
        }
    return out


def noise_report(
    rows: list[dict[str, Any]],
    result: NoiseResult,
    config: NoiseConfig,
    *,
    without_priors: NoiseResult | None = None,
) -> dict[str, Any]:
    """What the noise reduction kept and dropped, and why; every input row is counted once.

    Args:
        rows: the rows given to :func:`assign_weights`.
        result: its result.
        config: the settings used.
        without_priors: the result of the same rows without priors (when ``config.priors`` is
            set): adds ``priors_effect``, tier counts with and without, and the rows that moved.

    Returns:
        ``n``, ``kept``, ``dropped``, ``weight_sum``, ``mean_confidence``, ``tiers`` (per tier:
        count, share, label_0, label_1, mean confidence, in_crash_state and single-change
        shares), ``signals`` (the two shares over all rows, and the mean confidence with and
        without each signal), ``per_source``, ``per_project``, ``per_label`` and ``settings``.
    """
    n = len(rows)
    if len(result) != n:
        raise ValueError(f"{n} rows but a result for {len(result)}")
    labels = np.asarray([row_label(r) for r in rows], dtype=np.int64)
    tiers: dict[str, dict[str, Any]] = {}
    for t in TIERS:
        idx = np.flatnonzero(result.tier == t)
        members = [rows[i] for i in idx]
        tiers[t] = {
            "count": len(idx),
            "share": len(idx) / n if n else 0.0,
            "label_0": int((labels[idx] == 0).sum()),
            "label_1": int((labels[idx] == 1).sum()),
            "weight": float(result.weight[idx].sum()),
            "mean_confidence": float(result.confidence[idx].mean()) if len(idx) else None,
            "in_crash_state_share": _signal_share(members, "in_crash_state"),
            "single_change_share": _signal_share(members, "single_change"),
        }
    signals: dict[str, Any] = {}
    for prior in _PRIOR_FIELDS:
        has = np.fromiter((_has_signal(r, prior) for r in rows), dtype=bool, count=n)
        signals[prior] = {
            "share": _signal_share(rows, prior),
            "mean_confidence_with": float(result.confidence[has].mean()) if has.any() else None,
            "mean_confidence_without": (
                float(result.confidence[~has].mean()) if (~has).any() else None
            ),
        }
    report: dict[str, Any] = {
        "n": n,
        "kept": int((result.tier != "dropped").sum()),
        "dropped": int((result.tier == "dropped").sum()),
        "weight_sum": float(result.weight.sum()),
        "mean_confidence": float(result.confidence.mean()) if n else None,
        "tiers": tiers,
        "signals": signals,
        "per_source": _breakdown([str(r.get("source") or "unknown") for r in rows], result),
        "per_project": _breakdown([str(r.get("project") or "<none>") for r in rows], result),
        "per_label": _breakdown([str(v) for v in labels.tolist()], result),
        "settings": config.model_dump(mode="json"),
    }
    if without_priors is not None:
        if len(without_priors) != n:
            raise ValueError(f"{n} rows but a result without priors for {len(without_priors)}")
        moves = Counter(zip(without_priors.tier.tolist(), result.tier.tolist(), strict=True))
        report["priors_effect"] = {
            "priors": list(config.priors),
            "without": {t: int((without_priors.tier == t).sum()) for t in TIERS},
            "with": {t: tiers[t]["count"] for t in TIERS},
            "moved": [
                {"from": a, "to": b, "count": c} for (a, b), c in sorted(moves.items()) if a != b
            ],
        }
    return report


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _breakdown_table(title: str, part: dict[str, dict[str, Any]], limit: int = 30) -> list[str]:
    lines = [
        f"### Per {title}",
        "",
        f"| {title} | rows | high | mid | sampled | dropped | weight |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ordered = sorted(part.items(), key=lambda kv: (-kv[1]["n"], kv[0]))
    for key, row in ordered[:limit]:
        lines.append(
            f"| {key} | {row['n']} | {row['high']} | {row['mid']} | {row['sampled']} | "
            f"{row['dropped']} | {row['weight_sum']:.1f} |"
        )
    if len(ordered) > limit:
        lines.append(f"| ... {len(ordered) - limit} more | | | | | | |")
    return [*lines, ""]


def noise_markdown(report: dict[str, Any]) -> str:
    """The report as markdown (tables of at most 7 columns) for a UI artifact or a file."""
    s = report["settings"]
    lines = [
        "## Noise reduction",
        "",
        f"{report['n']} collected functions: **{report['kept']} kept** "
        f"(total weight {report['weight_sum']:.1f}), {report['dropped']} dropped; mean "
        f"confidence in the collected label {_num(report['mean_confidence'])}.",
        "",
        f"Confidence > {s['high_confidence']:g} weighs {s['high_weight']:g}; "
        f"[{s['mid_confidence']:g}, {s['high_confidence']:g}] weighs {s['mid_weight']:g}; "
        f"{s['rest_fraction']:.0%} of the rest (seed {s['seed']}) weighs {s['rest_weight']:g}. "
        f"Priors: {', '.join(s['priors']) or 'none'}.",
        "",
        "| tier | rows | share | label 0 | label 1 | in crash state | single change |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in TIERS:
        row = report["tiers"][t]
        lines.append(
            f"| {t} | {row['count']} | {_pct(row['share'])} | {row['label_0']} | "
            f"{row['label_1']} | {_pct(row['in_crash_state_share'])} | "
            f"{_pct(row['single_change_share'])} |"
        )
    lines += [
        "",
        "How the confidence agrees with the noise signals (a right label is more likely for a "
        "function in the crash state and for the only function its fix changed):",
        "",
        "| signal | share of rows | mean confidence, rows with it | rows without it |",
        "|---|---:|---:|---:|",
    ]
    for name, sig in report["signals"].items():
        lines.append(
            f"| {name} | {_pct(sig['share'])} | {_num(sig['mean_confidence_with'])} | "
            f"{_num(sig['mean_confidence_without'])} |"
        )
    lines.append("")
    effect = report.get("priors_effect")
    if effect:
        lines += [
            f"### Priors ({', '.join(effect['priors'])}): tiers with and without",
            "",
            "| tier | without priors | with priors |",
            "|---|---:|---:|",
        ]
        lines += [f"| {t} | {effect['without'][t]} | {effect['with'][t]} |" for t in TIERS]
        moved = ", ".join(f"{m['from']} -> {m['to']}: {m['count']}" for m in effect["moved"])
        lines += ["", f"Rows that changed tier: {moved or 'none'}.", ""]
    lines += _breakdown_table("label", report["per_label"])
    lines += _breakdown_table("source", report["per_source"])
    lines += _breakdown_table("project", report["per_project"])
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- files


def _annotated(row: dict[str, Any], result: NoiseResult, i: int) -> dict[str, Any]:
    return {
        **row,
        "weight": float(result.weight[i]),
        "noise_tier": str(result.tier[i]),
        "noise_confidence": float(result.confidence[i]),
    }


def _check_lengths(rows: list[dict[str, Any]], result: NoiseResult) -> None:
    if len(rows) != len(result):
        raise ValueError(f"{len(rows)} rows but a result for {len(result)}")


def write_weighted(rows: list[dict[str, Any]], result: NoiseResult, path: str | Path) -> int:
    """Write the kept rows (tier not ``dropped``) with ``weight``, ``noise_tier`` and
    ``noise_confidence`` added; returns how many were written."""
    _check_lengths(rows, result)
    return write_jsonl(
        path, (_annotated(r, result, i) for i, r in enumerate(rows) if result.tier[i] != "dropped")
    )


def write_dropped(
    rows: list[dict[str, Any]],
    result: NoiseResult,
    path: str | Path,
    config: NoiseConfig,
) -> int:
    """Write the dropped rows with ``noise_reason`` (:data:`DROP_REASON`) and a readable
    ``noise_detail``; returns how many were written."""
    _check_lengths(rows, result)

    def dropped() -> Iterable[dict[str, Any]]:
        for i, row in enumerate(rows):
            if result.tier[i] == "dropped":
                yield {
                    **_annotated(row, result, i),
                    "noise_reason": DROP_REASON,
                    "noise_detail": (
                        f"confidence {result.confidence[i]:.3f} in label {row_label(row)} is "
                        f"below mid_confidence {config.mid_confidence:g} and the row is not in "
                        f"the seeded {config.rest_fraction:.0%} sample (seed {config.seed})"
                    ),
                }

    return write_jsonl(path, dropped())
