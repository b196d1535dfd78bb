"""Line-localisation measurement: the changed lines a diff yields, the exact random and tie
references against brute-force enumeration, the data accounting, and a real end-to-end run on
OSS-Fuzz rows with a TF-IDF baseline trained here."""

from __future__ import annotations

import gzip
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.cli import main
from streamguard_core.data.loaders import DataError
from streamguard_core.explain.lines import code_lines
from streamguard_core.explain.measure import (
    TOP_KS,
    FixCase,
    ModelSpec,
    build_targets,
    changed_lines,
    first_lines_reference,
    load_fix_cases,
    longest_lines_reference,
    measure,
    random_order_draws,
    random_reference,
    rank_metrics,
    summarise,
    write_outputs,
)

BEFORE = """\
int copy(char *dst, const char *src, int n)
{
    int i;
    for (i = 0; i <= n; i++)
        dst[i] = src[i];

    return i;
}"""


# --------------------------------------------------------------------------- changed lines


def test_modified_line_is_changed() -> None:
    after = BEFORE.replace("i <= n", "i < n")
    assert changed_lines(BEFORE, after).tolist() == [3]


def test_deleted_lines_are_changed() -> None:
    after = BEFORE.replace("        dst[i] = src[i];\n", "").replace("    int i;\n", "")
    assert changed_lines(BEFORE, after).tolist() == [2, 4]


def test_pure_insertion_changes_no_line() -> None:
    after = BEFORE.replace("    int i;\n", "    int i;\n    if (!dst) return -1;\n")
    assert changed_lines(BEFORE, after).tolist() == []


def test_whitespace_only_change_is_ignored_unless_asked() -> None:
    after = BEFORE.replace("        dst[i] = src[i];", "      dst[i]=src[i];")
    assert changed_lines(BEFORE, after).tolist() == []
    assert changed_lines(BEFORE, after, ignore_whitespace=False).tolist() == [4]


def test_modification_next_to_insertion_marks_only_the_pre_side_line() -> None:
    after = BEFORE.replace("    return i;", "    dst[n - 1] = 0;\n    return n;")
    assert changed_lines(BEFORE, after).tolist() == [6]


def test_targets_count_what_they_leave_out() -> None:
    insertion = BEFORE.replace("    int i;\n", "    int i;\n    if (!dst) return -1;\n")
    brace_only = BEFORE.replace("\n}", "\n    }")  # a re-indented brace: whitespace, unchanged
    blank_only = BEFORE.replace("        dst[i] = src[i];\n\n", "        dst[i] = src[i];\n")
    mixed = BEFORE.replace("        dst[i] = src[i];\n\n    return i;", "    return n;")
    cases = [
        FixCase(BEFORE, after, False, "p", (str(i),))
        for i, after in enumerate([insertion, brace_only, blank_only, mixed])
    ]
    targets, counts = build_targets(cases)
    # brace_only changes nothing once whitespace is ignored: it is an insertion-free no-op,
    # so it has no changed line either
    assert counts["insertion_only"] == 2
    assert counts["reference_not_code"] == 1  # blank_only: only the blank line went
    assert counts["targets"] == len(targets) == 1
    # mixed: lines 4 (dst[i] = ...), 5 (blank) and 6 (return) replaced; the blank is dropped
    assert counts["reference_lines_not_code"] == 1
    (target,) = targets
    assert target.candidates.tolist() == np.flatnonzero(code_lines(BEFORE)).tolist()
    assert target.candidates[target.is_reference].tolist() == [4, 6]


# --------------------------------------------------------------------------- references


def brute_force(scores: list[float], reference: list[bool], ks: tuple[int, ...]):
    """Average top-k hits and first reference rank over every order that sorts ``scores``
    from high to low (ties in every possible order), each such order equally likely."""
    n = len(scores)
    hits, ranks, count = np.zeros(len(ks)), 0.0, 0
    for order in itertools.permutations(range(n)):
        if any(scores[order[i]] < scores[order[i + 1]] for i in range(n - 1)):
            continue
        first = next(i for i, line in enumerate(order) if reference[line]) + 1
        hits += [first <= k for k in ks]
        ranks += first
        count += 1
    return hits / count, ranks / count


@pytest.mark.parametrize(("n", "m"), [(1, 1), (4, 1), (5, 2), (6, 3), (7, 7), (7, 2)])
def test_random_reference_matches_enumeration(n: int, m: int) -> None:
    ks = (1, 2, 3, 5, 10)
    reference = [i < m for i in range(n)]
    expected_hits, expected_rank = brute_force([0.0] * n, reference, ks)
    hits, rank = random_reference(n, m, ks)
    np.testing.assert_allclose(hits, expected_hits, atol=1e-12)
    assert rank == pytest.approx(expected_rank)
    # all-equal scores are the random reference, wherever the reference lines are
    tied_hits, tied_rank = rank_metrics(np.zeros(n), np.asarray(reference[::-1]), ks)
    np.testing.assert_allclose(tied_hits, hits, atol=1e-12)
    assert tied_rank == pytest.approx(rank)


def test_random_reference_matches_simulation_at_scale() -> None:
    n, m, rng = 60, 3, np.random.default_rng(5)
    draws = np.asarray([rng.permutation(n) for _ in range(20000)])
    first = (np.argmax(draws < m, axis=1) + 1).astype(float)
    hits, rank = random_reference(n, m, (10,))
    # 20000 draws: standard errors ~0.0035 on the hit share and ~0.1 on the rank
    assert abs(hits[0] - (first <= 10).mean()) < 0.015
    assert abs(rank - first.mean()) < 0.5
    assert hits[0] == pytest.approx(1 - math.comb(57, 10) / math.comb(60, 10))


@pytest.mark.parametrize("seed", range(12))
def test_tied_scores_match_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 8))
    scores = rng.integers(0, 3, size=n).astype(float)  # few values: many ties
    reference = rng.random(n) < 0.35
    reference[rng.integers(n)] = True
    ks = (1, 2, 3, 10)
    expected_hits, expected_rank = brute_force(scores.tolist(), reference.tolist(), ks)
    hits, rank = rank_metrics(scores, reference, ks)
    np.testing.assert_allclose(hits, expected_hits, atol=1e-12)
    assert rank == pytest.approx(expected_rank)


def test_distinct_scores_rank_exactly() -> None:
    scores = np.asarray([0.1, 0.9, 0.5, 0.7, 0.2])
    reference = np.asarray([False, False, True, False, True])
    hits, rank = rank_metrics(scores, reference, (1, 2, 3))
    assert rank == 3.0  # 0.9, 0.7, then 0.5 (a reference line)
    assert hits.tolist() == [0.0, 0.0, 1.0]
    assert first_lines_reference(reference, (1, 2, 3)) == (pytest.approx([0, 0, 1]), 3.0)


def test_random_order_draws_follow_the_exact_distribution() -> None:
    n_code, n_ref = np.asarray([1, 4, 9, 30]), np.asarray([1, 1, 3, 2])
    hits, ranks = random_order_draws(n_code, n_ref, 40000, seed=3, ks=(1, 3))
    exact = [random_reference(int(n), int(m), (1, 3)) for n, m in zip(n_code, n_ref, strict=True)]
    # means over 4 functions of 40000 draws: standard errors ~0.03 (rank) and ~0.002 (hits)
    assert ranks.mean() == pytest.approx(np.mean([r for _, r in exact]), abs=0.1)
    np.testing.assert_allclose(hits.mean(axis=0), np.mean([h for h, _ in exact], axis=0),
                               atol=0.01)  # fmt: skip
    # one function with one line: every draw ranks it first
    single_hits, single_ranks = random_order_draws(np.asarray([1]), np.asarray([1]), 5, seed=0)
    assert single_ranks.tolist() == [1.0] * 5 and single_hits.min() == 1.0


def synthetic_subset(explainer: str, seed: int, n: int = 300) -> dict[str, np.ndarray]:
    """Per-function arrays of ``summarise`` for an explainer that ranks the changed lines first
    ("perfect") or scores lines at random ("random"), on random function shapes."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"n_code_lines": [], "n_reference": []}
    for _ in range(n):
        size = int(rng.integers(3, 60))
        reference = np.zeros(size, dtype=bool)
        reference[rng.choice(size, size=int(rng.integers(1, 4)), replace=False)] = True
        scores = reference.astype(float) if explainer == "perfect" else rng.random(size)
        for name, (hits, rank) in {
            "model": rank_metrics(scores, reference),
            "random": random_reference(size, int(reference.sum())),
            "first_lines": first_lines_reference(reference),
            "longest_lines": rank_metrics(rng.integers(1, 40, size), reference),
        }.items():
            rows.setdefault(f"{name}_hits", []).append(hits)
            rows.setdefault(f"{name}_rank", []).append(rank)
        rows["n_code_lines"].append(size)
        rows["n_reference"].append(int(reference.sum()))
    return {key: np.asarray(value, dtype=np.float64) for key, value in rows.items()}


def test_summary_tells_a_perfect_explainer_from_a_random_one() -> None:
    perfect = summarise(synthetic_subset("perfect", seed=1), n_boot=200, seed=0, n_null=2000)
    assert perfect["top_k"]["1"]["model"]["estimate"] == 1.0
    assert perfect["first_rank"]["model"]["estimate"] == 1.0 and perfect["ifa"] == 0.0
    assert perfect["top_k"]["10"]["model_minus_random"]["p_random_order"] == pytest.approx(1 / 2001)
    assert perfect["first_rank"]["model_minus_random"]["p_random_order"] == pytest.approx(1 / 2001)
    assert perfect["first_rank"]["model_minus_random"]["worse"] == 0

    random = summarise(synthetic_subset("random", seed=2), n_boot=200, seed=0, n_null=2000)
    versus = random["top_k"]["10"]["model_minus_random"]
    # a random explainer is a draw from the null: its difference interval holds 0 and its p is
    # not small (seeded, so this is one fixed draw, not a flaky check)
    assert versus["ci95_low"] <= 0.0 <= versus["ci95_high"]
    assert versus["p_random_order"] > 0.05
    assert random["first_rank"]["model_minus_random"]["p_random_order"] > 0.05


def test_longest_lines_rank_code_lines_by_their_non_blank_characters() -> None:
    after = BEFORE.replace("    int i;", "    int i = 0;")  # line 2, the shortest code line
    (target,) = build_targets([FixCase(BEFORE, after, False, "p", ("a",))])[0]
    # non-blank characters: head 36, for 17, dst 14, return 8, "int i;" 5: the changed
    # line is the shortest code line, ranked 5th
    hits, rank = longest_lines_reference(BEFORE, target, (1, 4, 5))
    assert rank == 5.0 and hits.tolist() == [0.0, 0.0, 1.0]


def test_rank_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no reference line"):
        rank_metrics(np.zeros(3), np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        rank_metrics(np.asarray([0.0, np.nan]), np.asarray([True, False]))
    with pytest.raises(ValueError, match="1 <= m <= n"):
        random_reference(3, 0)


# --------------------------------------------------------------------------- data accounting


def fix_row(pair: str, target: int, func: str, crash: bool = False) -> dict:
    return {"func": func, "target": target, "pair_id": pair, "in_crash_state": crash,
            "project": "demo"}  # fmt: skip


def test_fix_cases_pair_deduplicate_and_count(tmp_path: Path) -> None:
    fixed = BEFORE.replace("i <= n", "i < n")
    rows = [
        fix_row("a", 1, BEFORE), fix_row("a", 0, fixed),
        fix_row("b", 1, BEFORE, crash=True), fix_row("b", 0, fixed),  # same change, repeated
        fix_row("c", 1, fixed), fix_row("c", 0, BEFORE),  # another change
        fix_row("d", 1, BEFORE),  # no post-fix partner
    ]  # fmt: skip
    path = tmp_path / "fixes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cases, counts = load_fix_cases(path)
    assert counts == {"rows": 7, "pre_fix_rows": 4, "unpaired": 1, "repeats": 1, "changes": 2}
    first = next(c for c in cases if c.before == BEFORE)
    assert first.pair_ids == ("a", "b") and first.in_crash_state  # any of its rows


def test_fix_cases_name_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(fix_row("a", 1, BEFORE)) + "\n" + json.dumps({"func": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing field\(s\) target, pair_id"):
        load_fix_cases(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: not JSON"):
        load_fix_cases(path)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def real_baseline(shared_data: Path, tmp_path_factory) -> Path:
    """A TF-IDF baseline trained here on 600 Devign functions (skipped without the data)."""
    from streamguard_core.config import BaselineConfig
    from streamguard_core.models.baseline import BaselineDetector

    with gzip.open(shared_data / "devign_train.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in itertools.islice(handle, 600)]
    detector = BaselineDetector(BaselineConfig(min_df=2))
    detector.fit([r["func"] for r in rows], [r["target"] for r in rows])
    return detector.save(tmp_path_factory.mktemp("baseline") / "model")


@pytest.fixture(scope="module")
def real_metrics(shared_data: Path, tmp_path_factory) -> Path:
    """Gradient-boosted trees over code metrics of 200 Devign functions: no per-line signal."""
    from streamguard_core.config import BaselineConfig
    from streamguard_core.models.baseline import BaselineDetector

    with gzip.open(shared_data / "devign_train.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in itertools.islice(handle, 200)]
    detector = BaselineDetector(BaselineConfig(features="metrics"))
    detector.fit([r["func"] for r in rows], [r["target"] for r in rows])
    return detector.save(tmp_path_factory.mktemp("metrics") / "model")


@pytest.fixture(scope="module")
def real_fixes(shared_data: Path, tmp_path_factory) -> Path:
    """The first 60 rows (30 fix pairs) of the OSS-Fuzz fixes, as a small file."""
    with gzip.open(shared_data / "ossfuzz_fixes.jsonl.gz", "rt") as handle:
        lines = list(itertools.islice(handle, 60))
    path = tmp_path_factory.mktemp("fixes") / "fixes.jsonl"
    path.write_text("".join(lines))
    return path


@pytest.mark.slow
def test_end_to_end_on_real_fixes(
    real_baseline: Path, real_metrics: Path, real_fixes: Path, tmp_path: Path
) -> None:
    specs = [ModelSpec("tokens", real_baseline), ModelSpec("metrics", real_metrics)]
    document, rows = measure(real_fixes, specs, n_boot=200)
    counts = document["counts"]
    assert counts["pre_fix_rows"] == counts["unpaired"] + counts["repeats"] + counts["changes"]
    assert counts["changes"] == (
        counts["insertion_only"] + counts["reference_not_code"] + counts["targets"]
    )
    assert counts["measured"] == counts["targets"] == len(rows) > 0

    # the random reference in the report is the mean of the per-function exact values,
    # recomputed here from the texts alone
    cases, _ = load_fix_cases(real_fixes)
    targets, _ = build_targets(cases)
    expected = np.mean([random_reference(len(t.candidates), int(t.is_reference.sum()))[0]
                        for t in targets], axis=0)  # fmt: skip
    entry, metrics = document["models"]
    assert entry["explains_lines"] and entry["kind"] == "baseline"
    # trees over whole-function metrics have no per-line signal: reported, never ranked
    assert not metrics["explains_lines"] and metrics["subsets"] is None
    assert all("first_rank" not in row["models"]["metrics"] for row in rows)
    overall = entry["subsets"]["all"]
    assert overall["n_functions"] == len(targets)
    for j, k in enumerate(TOP_KS):
        cell = overall["top_k"][str(k)]
        assert cell["random"]["estimate"] == pytest.approx(expected[j])
        model = cell["model"]
        assert 0.0 <= model["ci95_low"] <= model["estimate"] <= model["ci95_high"] <= 1.0
    ranks = [row["models"]["tokens"]["first_rank"] for row in rows]
    assert overall["first_rank"]["model"]["estimate"] == pytest.approx(np.mean(ranks))
    assert all(1.0 <= r <= row["n_code_lines"] for r, row in zip(ranks, rows, strict=True))
    assert overall["ifa"] == pytest.approx(np.mean(ranks) - 1.0)
    crash = entry["subsets"]["in_crash_state"]["n_functions"]
    assert crash == sum(row["in_crash_state"] for row in rows)
    flagged = entry["subsets"]["flagged"]["n_functions"]
    threshold = entry["threshold"]
    assert flagged == sum(row["models"]["tokens"]["probability"] >= threshold for row in rows)

    paths = write_outputs(document, rows, tmp_path / "out")
    assert json.loads(paths.results.read_text())["counts"] == counts
    table = paths.table.read_text()
    assert "| tokens | all |" in table and "| metrics | – | – | no per-line signal" in table
    assert len(paths.functions.read_text().splitlines()) == len(rows)


@pytest.mark.slow
def test_cli_writes_the_report_and_samples(real_baseline: Path, real_fixes: Path,
                                           tmp_path: Path, capsys) -> None:  # fmt: skip
    out = tmp_path / "cli"
    code = main(["explain-eval", "--data", str(real_fixes), "--model-dir", f"tok={real_baseline}",
                 "--max-functions", "5", "--bootstrap", "50", "--output", str(out),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    document = json.loads((out / "localisation.json").read_text())
    assert document["counts"]["measured"] == 5
    assert document["models"][0]["name"] == "tok"
    assert "| tok | all | 5 |" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_names_a_missing_model(real_fixes: Path, tmp_path: Path, capsys) -> None:
    code = main(["explain-eval", "--data", str(real_fixes), "--model-dir", str(tmp_path / "nope"),
                 "--output", str(tmp_path / "o")])  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err
    assert "nope: not a model directory" in err and "Traceback" not in err
