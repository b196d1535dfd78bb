"""Phase 1 against phase 2 on the same items, with paired statistics and a verdict per model.

For every split of a processed data set (``<data_dir>/<split>/records.jsonl``), every completed
seed of each model in both roots scores the split's functions; the predictions are written as
run directories the evaluation's :func:`~streamguard_core.evaluation.compare.compare_runs`
reads, and it compares ``phase2-<model>`` (A) with ``phase1-<model>`` (B), so a positive effect
means phase 2 is better. Layout of ``out_dir``::

    <split>/phase1-<model>/seed_<n>/predictions.jsonl   {"id", "label", "probability", "prediction"}
    <split>/phase1-<model>/seed_<n>/run_status.json     {"status": "completed"}
    <split>/phase1-<model>/seed_<n>/metrics.json        {<split>: {"threshold": the run's own}}
    <split>/phase2-<model>/...                          the same for phase 2
    <split>/<model>/evaluation.json, evaluation.md, plots   compare_runs' output
    phase_comparison.json, phase_comparison.md

Seeds are paired by value where both phases have them; when the two phases share no seed,
phase 2's seeds are paired with phase 1's by position (sorted), written under the phase-1 seed
number, and the pairing is recorded. A split's family for Holm's correction is the DeLong
(ROC-AUC) and McNemar (accuracy) tests of every model; a model's verdict is "phase 2 better"
when a test is significant in phase 2's favour and none in phase 1's, "phase 1 better" the other
way round, "mixed" when they disagree, else "no significant difference".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamguard_core.config import seed_dir
from streamguard_core.evaluation import stats
from streamguard_core.evaluation.compare import ALPHA, compare_runs
from streamguard_core.io import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from streamguard_core.phase2.score import SeedScores, score_runs
from streamguard_core.training.paths import RunPaths

COMPARISON_FILE = "phase_comparison.json"
MARKDOWN_FILE = "phase_comparison.md"
VERDICT_TESTS = {"delong": "ROC-AUC", "mcnemar": "accuracy"}
"""Tests behind a verdict -> the metric whose effect they test."""
_METRIC_KEYS = {"delong": "roc_auc", "mcnemar": "accuracy"}
PHASE2_BETTER = "phase 2 better"
PHASE1_BETTER = "phase 1 better"
NO_DIFFERENCE = "no significant difference"
MIXED = "mixed"


def run_name(phase: int, model: str) -> str:
    """The run directory of a phase's model in a comparison split (``phase2-gnn``)."""
    return f"phase{phase}-{model}"


def pair_seeds(phase1: list[int], phase2: list[int]) -> dict[str, Any]:
    """How the two phases' seeds are paired: by value when they share one, else by position.

    Returns:
        ``mode`` ("by value" or "by position"), ``pairs`` (``{"phase1", "phase2", "as"}``: the
        seed number both are written under), ``note`` and ``phase2_as`` (phase-2 seed -> the
        seed number it is written under).
    """
    p1, p2 = sorted(phase1), sorted(phase2)
    common = sorted(set(p1) & set(p2))
    if common or not p1 or not p2:
        return {
            "mode": "by value",
            "pairs": [{"phase1": s, "phase2": s, "as": s} for s in common],
            "phase2_as": {s: s for s in p2},
            "note": None if common else "one phase has no seed",
        }
    as_seed = {b: a for a, b in zip(p1, p2, strict=False)}
    pairs = [{"phase1": a, "phase2": b, "as": a} for a, b in zip(p1, p2, strict=False)]
    for extra in p2[len(p1) :]:
        as_seed[extra] = extra
    text = ", ".join(f"phase-2 seed {p['phase2']} with phase-1 seed {p['phase1']}" for p in pairs)
    return {
        "mode": "by position",
        "pairs": pairs,
        "phase2_as": as_seed,
        "note": f"the phases share no seed (phase 1: {p1}, phase 2: {p2}); paired by position: "
        f"{text} (phase-2 runs written under the phase-1 seed number)",
    }


def _write_run(
    run_dir: Path,
    split: str,
    ids: list[str],
    labels: list[int],
    probabilities: np.ndarray,
    threshold: float,
    source: SeedScores,
) -> None:
    """One scored seed as a run directory compare_runs reads."""
    paths = RunPaths(run_dir)
    write_jsonl(
        paths.predictions,
        (
            {"id": i, "label": y, "probability": float(p), "prediction": int(p >= threshold)}
            for i, y, p in zip(ids, labels, probabilities.tolist(), strict=True)
        ),
    )
    atomic_write_json(
        paths.status,
        {
            "status": "completed",
            "model": source.model,
            "seed": source.seed,
            "model_dir": str(source.model_dir),
        },
    )
    # compare_runs reads the run's own threshold from here (metrics.json: test, else valid)
    key = "test" if split == "test" else "valid"
    atomic_write_json(paths.metrics, {key: {"threshold": threshold}})


def _read_split(
    data_dir: Path, split: str
) -> tuple[list[str], list[str], list[int], list[str | None]] | str:
    """ids, functions, labels and groups (a collected pair's ``pair_id``) of a split, or why
    it is skipped."""
    path = data_dir / split / "records.jsonl"
    if not path.is_file():
        return f"split {split!r}: no {path}"
    rows = list(read_jsonl(path))
    if not rows:
        return f"split {split!r}: {path} is empty"
    return (
        [str(r["id"]) for r in rows],
        [str(r["func"]) for r in rows],
        [int(r["label"]) for r in rows],
        [r.get("group") for r in rows],
    )


def pairwise_order(
    groups: list[str | None], labels: list[int], probabilities: np.ndarray
) -> dict[str, Any] | None:
    """How often the version before a fix scores above the version after it.

    A pair is a group holding exactly one label-1 and one label-0 function (the two versions
    of one collected change). The two texts often differ by a line, so a function-level
    detector gives them nearly the same score: ROC-AUC over such data stays near 0.5 unless
    the model reads the changed lines. Returns the number of pairs, the share ordered right
    (ties count half), the median score gap and the exact binomial p against 0.5 (ties
    split), or None when the split has no pair.
    """
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        if group:
            members.setdefault(group, []).append(i)
    right = ties = 0
    gaps = []
    for idx in members.values():
        if len(idx) != 2 or sorted(labels[i] for i in idx) != [0, 1]:
            continue
        pre, post = sorted(idx, key=lambda i: -labels[i])
        gap = float(probabilities[pre] - probabilities[post])
        gaps.append(abs(gap))
        right += gap > 0
        ties += gap == 0
    n = len(gaps)
    if not n:
        return None
    from scipy.stats import binomtest

    wins = right + ties // 2
    return {
        "pairs": n,
        "pre_fix_higher": (right + ties / 2) / n,
        "median_gap": float(np.median(gaps)),
        "p_binomial": float(binomtest(wins, n, 0.5).pvalue),
    }


def _phase_metric(evaluation: dict[str, Any], name: str, metric: str) -> float | None:
    model = evaluation["models"].get(name)
    return None if model is None else model["metrics"][metric]["mean"]


def _verdict(tests: dict[str, dict[str, Any]], alpha: float) -> str:
    """phase 2 better / phase 1 better / mixed / no significant difference (Holm-adjusted)."""
    signs = {
        np.sign(t["effect"])
        for t in tests.values()
        if t["p_holm"] is not None and t["p_holm"] < alpha and t["effect"]
    }
    if signs == {1.0}:
        return PHASE2_BETTER
    if signs == {-1.0}:
        return PHASE1_BETTER
    return MIXED if signs else NO_DIFFERENCE


def _model_tests(evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The DeLong and McNemar results of phase 2 - phase 1 (the only pair)."""
    pairs = evaluation["pairs"]
    found = {t["test"]: t for t in pairs[0]["tests"]} if pairs else {}
    out = {}
    for test in VERDICT_TESTS:
        t = found.get(test, {})
        out[test] = {
            "metric": _METRIC_KEYS[test],
            "effect": t.get("effect"),
            "ci95_low": t.get("ci95_low"),
            "ci95_high": t.get("ci95_high"),
            "p": t.get("p"),
            "per_seed": [{"seed": r["seed"], "p": r["p"]} for r in t.get("per_seed", [])],
            "note": t.get("note") or (None if pairs else "fewer than two phases could be read"),
        }
    return out


def compare_phases(
    phase1_root: str | Path,
    phase2_root: str | Path,
    data_dir: str | Path,
    models: list[str],
    out_dir: str | Path,
    *,
    splits: tuple[str, ...] = ("valid", "test"),
    seeds: list[int] | None = None,
    n_boot: int = stats.DEFAULT_N_BOOT,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Score ``data_dir``'s splits with both phases' models and compare them, model by model.

    Args:
        phase1_root: the phase-1 pipeline root (``<model>/seed_<n>/model/``).
        phase2_root: the phase-2 training root, same layout.
        data_dir: a processed data set; both phases score its ``<split>/records.jsonl``.
        models: run names present in both roots.
        out_dir: where predictions, evaluations and ``phase_comparison.*`` go.
        splits: the splits to compare on; a missing or empty one is skipped with a note.
        seeds: phase 2's seeds to compare (the phase-2 plan's); default every completed seed.
            Phase 1 offers all its completed seeds, paired by value, else by position.
        n_boot: bootstrap resamples of compare_runs.
        alpha: the family-wise level of the Holm-adjusted p-values.

    Returns:
        The JSON-safe result also written to ``phase_comparison.json``: ``splits`` (per split:
        ``n``, ``vulnerable_rate``, ``models`` -> phase-1/phase-2 ROC-AUC and accuracy, the
        DeLong and McNemar tests with ``p_holm``, the ``verdict`` and the evaluation's path),
        ``seed_pairing`` per model, ``notes`` and the settings.

    Raises:
        streamguard_core.phase2.score.ScoringError: a model has no completed seed in a root.
        streamguard_core.evaluation.compare.ComparisonError: runs that cannot be compared.
    """
    data, out = Path(data_dir), Path(out_dir)
    notes: list[str] = []
    loaded: dict[str, tuple[list[str], list[str], list[int], list[str | None]]] = {}
    for split in splits:
        found = _read_split(data, split)
        if isinstance(found, str):
            notes.append(f"{found}; skipped")
        else:
            loaded[split] = found
    # one scoring pass per root over every split's functions, then sliced per split
    funcs = [f for _, split_funcs, _, _ in loaded.values() for f in split_funcs]
    bounds, start = {}, 0
    for split, (ids, _, _, _) in loaded.items():
        bounds[split] = (start, start + len(ids))
        start += len(ids)
    scores: dict[int, dict[str, list[SeedScores]]] = {1: {}, 2: {}}
    pairing: dict[str, dict[str, Any]] = {}
    if funcs:
        for phase, root in ((1, phase1_root), (2, phase2_root)):
            # ``seeds`` names phase 2's runs; phase 1 keeps all its seeds for the pairing
            for run in score_runs(root, models, funcs, seeds if phase == 2 else None):
                scores[phase].setdefault(run.model, []).append(run)
    for model in models:
        pairing[model] = pair_seeds(
            [s.seed for s in scores[1].get(model, [])], [s.seed for s in scores[2].get(model, [])]
        )
        if pairing[model]["note"] and pairing[model]["mode"] == "by position":
            notes.append(f"{model}: {pairing[model]['note']}")

    result_splits: dict[str, Any] = {}
    for split, (ids, _, labels, groups) in loaded.items():
        lo, hi = bounds[split]
        split_root = out / split
        written_seeds: dict[str, set[int]] = {m: set() for m in models}
        for model in models:
            for phase in (1, 2):
                for run in scores[phase].get(model, []):
                    as_seed = run.seed if phase == 1 else pairing[model]["phase2_as"][run.seed]
                    written_seeds[model].add(as_seed)
                    _write_run(
                        seed_dir(split_root, run_name(phase, model), as_seed),
                        split,
                        ids,
                        labels,
                        run.probabilities[lo:hi],
                        run.threshold,
                        run,
                    )
        per_model: dict[str, Any] = {}
        for model in models:
            a, b = run_name(2, model), run_name(1, model)
            evaluation = compare_runs(
                split_root,
                [a, b],
                sorted(written_seeds[model]),
                n_boot=n_boot,
                out_dir=split_root / model,
                alpha=alpha,
            )
            pairwise = {
                phase: pairwise_order(
                    groups,
                    labels,
                    np.mean([r.probabilities[lo:hi] for r in scores[phase][model]], axis=0),
                )
                if scores[phase].get(model)
                else None
                for phase in (1, 2)
            }
            per_model[model] = {
                "pairwise": {"phase1": pairwise[1], "phase2": pairwise[2]},
                "phase1": {
                    "roc_auc": _phase_metric(evaluation, b, "roc_auc"),
                    "accuracy": _phase_metric(evaluation, b, "accuracy"),
                    "f1": _phase_metric(evaluation, b, "f1"),
                    "seeds": (evaluation["models"].get(b) or {}).get("seeds", []),
                },
                "phase2": {
                    "roc_auc": _phase_metric(evaluation, a, "roc_auc"),
                    "accuracy": _phase_metric(evaluation, a, "accuracy"),
                    "f1": _phase_metric(evaluation, a, "f1"),
                    "seeds": (evaluation["models"].get(a) or {}).get("seeds", []),
                },
                "paired_seeds": evaluation["pairs"][0]["seeds"] if evaluation["pairs"] else [],
                "tests": _model_tests(evaluation),
                "evaluation": evaluation["evaluation_path"],
            }
        family = [t for m in per_model.values() for t in m["tests"].values()]
        for test, adjusted in zip(family, stats.holm([t["p"] for t in family]), strict=True):
            test["p_holm"] = adjusted
            test["significant"] = adjusted is not None and adjusted < alpha
        for entry in per_model.values():
            entry["verdict"] = _verdict(entry["tests"], alpha)
        y = np.asarray(labels)
        result_splits[split] = {
            "n": len(ids),
            "vulnerable_rate": float(y.mean()),
            "models": per_model,
        }

    result: dict[str, Any] = {
        "phase1_root": str(phase1_root),
        "phase2_root": str(phase2_root),
        "data_dir": str(data),
        "models": list(models),
        "alpha": alpha,
        "n_boot": n_boot,
        "holm_family": "the DeLong and McNemar tests of every model, per split",
        "seed_pairing": {
            m: {k: v for k, v in p.items() if k != "phase2_as"} for m, p in pairing.items()
        },
        "splits": result_splits,
        "notes": notes,
    }
    out.mkdir(parents=True, exist_ok=True)
    result["comparison_path"] = str(out / COMPARISON_FILE)
    atomic_write_json(out / COMPARISON_FILE, result)
    atomic_write_text(out / MARKDOWN_FILE, phase_markdown(result))
    return result


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if value >= 0.001 else f"{value:.1e}"


def _difference(test: dict[str, Any]) -> str:
    if test["effect"] is None:
        return f"n/a ({test['note']})" if test.get("note") else "n/a"
    ci = (
        f" [{test['ci95_low']:+.3f}, {test['ci95_high']:+.3f}]"
        if test.get("ci95_low") is not None and test.get("ci95_high") is not None
        else ""
    )
    return f"{test['effect']:+.3f}{ci}"


def phase_markdown(result: dict[str, Any]) -> str:
    """The comparison as markdown: a table per split (7 columns) and the notes."""
    lines = [
        "## Phase 1 vs phase 2",
        "",
        f"Both phases scored the same items of each split. Difference = phase 2 - phase 1 "
        f"(mean over paired seeds, paired bootstrap 95% CI); p: DeLong for ROC-AUC, McNemar "
        f"for accuracy (largest over seeds), Holm-adjusted over the split's family; "
        f"alpha {result['alpha']:g}.",
        "",
    ]
    for split, part in result["splits"].items():
        lines += [
            f"### {split} ({part['n']} items, {part['vulnerable_rate']:.1%} vulnerable)",
            "",
            "| model | metric | phase 1 | phase 2 | difference [95% CI] | p (Holm) | verdict |",
            "|---|---|---:|---:|---|---:|---|",
        ]
        for model, entry in part["models"].items():
            for test, label in VERDICT_TESTS.items():
                t = entry["tests"][test]
                metric = _METRIC_KEYS[test]
                verdict = f"**{entry['verdict']}**" if test == "delong" else ""
                lines.append(
                    f"| {model} | {label} | {_num(entry['phase1'][metric])} | "
                    f"{_num(entry['phase2'][metric])} | {_difference(t)} | "
                    f"{_p(t['p_holm'])} | {verdict} |"
                )
        lines.append("")
        pair_rows = [
            (model, entry["pairwise"])
            for model, entry in part["models"].items()
            if entry.get("pairwise", {}).get("phase1") or entry.get("pairwise", {}).get("phase2")
        ]
        if pair_rows:
            lines += [
                "Fix pairs (the version before a fix against the version after it, seed-mean "
                "probabilities; 0.5 = a coin; p: exact binomial against 0.5):",
                "",
                "| model | pairs | phase 1: pre-fix higher | p | phase 2: pre-fix higher | p |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for model, pw in pair_rows:
                one, two = pw["phase1"] or {}, pw["phase2"] or {}
                lines.append(
                    f"| {model} | {one.get('pairs') or two.get('pairs')} | "
                    f"{_num(one.get('pre_fix_higher'))} | {_p(one.get('p_binomial'))} | "
                    f"{_num(two.get('pre_fix_higher'))} | {_p(two.get('p_binomial'))} |"
                )
            lines.append("")
    pairing = result["seed_pairing"]
    lines += ["Seeds paired:", ""]
    for model, p in pairing.items():
        pairs = ", ".join(
            f"{x['phase1']}" if x["phase1"] == x["phase2"] else f"{x['phase1']}~{x['phase2']}"
            for x in p["pairs"]
        )
        lines.append(f"- {model}: {p['mode']}: {pairs or 'none'}")
    if result["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines).rstrip() + "\n"
