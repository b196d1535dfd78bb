"""Noise reduction: confidence, priors, tiers at their bounds, the seeded sample, nothing lost."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from itertools import islice

import numpy as np
import pytest

from streamguard_core.collect.records import CollectedFunction, function_id, pair_id
from streamguard_core.config import NoiseConfig
from streamguard_core.io import read_jsonl
from streamguard_core.phase2.noise import (
    DROP_REASON,
    TIERS,
    apply_priors,
    assign_weights,
    label_confidence,
    noise_markdown,
    noise_report,
    round_half_up,
    write_dropped,
    write_weighted,
)


def _row(
    i: int,
    target: int,
    *,
    project: str = "zlib",
    source: str = "osv",
    in_crash_state: bool | None = None,
    n_changed: int | None = None,
) -> dict:
    """A collected function row as a collector writes it."""
    repo, commit, file, function, vuln = f"https://x/{project}", f"c{i:04d}", "a.c", f"f{i}", "V1"
    pair = pair_id(repo, commit, file, function, vuln)
    return CollectedFunction(
        id=function_id(source, vuln, pair, target),
        func=f"int f{i}(int *p) {{ return p[{i}]; }}",
        target=target,
        source=source,
        project=project,
        vuln_id=vuln,
        repo=repo,
        fix_commit=commit,
        parent_commit=f"p{i:04d}",
        file=file,
        function=function,
        pair_id=pair,
        in_crash_state=in_crash_state,
        n_changed_functions=n_changed,
    ).to_dict()


def test_label_confidence_is_the_mean_agreement_with_the_label():
    labels = np.array([1, 0, 1])
    probs = np.array([[0.9, 0.2, 0.4], [0.7, 0.4, 0.6]])
    assert label_confidence(labels, probs) == pytest.approx([0.8, 0.7, 0.5])
    assert label_confidence(labels, probs[0]) == pytest.approx([0.9, 0.8, 0.4])  # one scorer
    with pytest.raises(ValueError, match="n_scorers, n"):
        label_confidence(labels, probs[:, :2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_confidence(labels, np.array([0.5, 1.2, 0.1]))
    with pytest.raises(ValueError, match="0/1"):
        label_confidence(np.array([1, 2, 0]), probs)


def test_tiers_at_the_bounds():
    """0.8 exactly is mid (high needs more), 0.6 exactly is mid (inclusive), below is rest."""
    cfg = NoiseConfig(rest_fraction=0.0)
    rows = [_row(i, t) for i, t in enumerate([1, 0, 1, 0, 1, 1, 0])]
    # P(vulnerable) so that the confidence is 0.8, 0.8, 0.6, 0.6, 0.8000001, 0.5999999, 1.0
    probs = np.array([[0.8, 0.2, 0.6, 0.4, 0.8000001, 0.5999999, 0.0]])
    result = assign_weights(rows, probs, cfg)
    assert result.confidence[:4] == pytest.approx([0.8, 0.8, 0.6, 0.6], abs=0)
    assert result.tier.tolist() == ["mid", "mid", "mid", "mid", "high", "dropped", "high"]
    assert result.weight.tolist() == [
        cfg.mid_weight, cfg.mid_weight, cfg.mid_weight, cfg.mid_weight,
        cfg.high_weight, 0.0, cfg.high_weight,
    ]  # fmt: skip


def test_seeded_sample_size_and_determinism():
    rows = [_row(i, i % 2) for i in range(40)]
    # 15 confident rows, 25 low-confidence ones (confidence 0.3)
    probs = np.array([[(0.95 if i % 2 else 0.05) if i < 15 else (0.3 if i % 2 else 0.7)
                       for i in range(40)]])  # fmt: skip
    cfg = NoiseConfig(rest_fraction=0.1, seed=7)
    result = assign_weights(rows, probs, cfg)
    n_rest = 25
    assert round_half_up(0.1 * n_rest) == 3  # 2.5 rounds up, unlike round()
    assert (result.tier == "sampled").sum() == 3
    assert (result.tier == "dropped").sum() == n_rest - 3
    assert set(result.weight[result.tier == "sampled"]) == {cfg.rest_weight}
    again = assign_weights(rows, probs, cfg)
    assert again.tier.tolist() == result.tier.tolist()
    # the sample does not depend on the input order
    order = np.random.default_rng(1).permutation(40)
    shuffled = assign_weights([rows[i] for i in order], probs[:, order], cfg)
    sampled = {rows[i]["id"] for i in np.flatnonzero(result.tier == "sampled")}
    assert {rows[i]["id"] for i, t in zip(order, shuffled.tier, strict=True) if t == "sampled"} == (
        sampled
    )
    # the seed picks the sample
    others = {
        frozenset(np.flatnonzero(assign_weights(rows, probs, cfg.model_copy(update={"seed": s}))
                                 .tier == "sampled").tolist())
        for s in range(5)
    }  # fmt: skip
    assert len(others) > 1
    everything = assign_weights(rows, probs, cfg.model_copy(update={"rest_fraction": 1.0}))
    assert (everything.tier == "dropped").sum() == 0


def test_priors_multiply_the_odds():
    cfg = NoiseConfig(priors=["in_crash_state", "single_change"])
    rows = [
        _row(0, 1, in_crash_state=True),
        _row(1, 1, n_changed=1),
        _row(2, 1, in_crash_state=True, n_changed=1),
        _row(3, 1, in_crash_state=False, n_changed=3),
        _row(4, 1),  # signals unknown
    ]
    moved = apply_priors(np.full(5, 0.5), rows, cfg)
    q1, q2 = cfg.crash_state_prior, cfg.single_change_prior
    both = (q1 / (1 - q1)) * (q2 / (1 - q2))
    assert moved == pytest.approx([q1, q2, both / (1 + both), 0.5, 0.5])
    assert apply_priors(np.array([0.0, 1.0]), rows[:2], cfg).tolist() == [0.0, 1.0]
    only_crash = apply_priors(np.full(5, 0.5), rows, NoiseConfig(priors=["in_crash_state"]))
    assert only_crash == pytest.approx([q1, 0.5, q1, 0.5, 0.5])


def test_a_prior_raises_a_row_into_a_higher_tier():
    rows = [_row(0, 1, in_crash_state=True), _row(1, 1, in_crash_state=False)]
    probs = np.array([[0.7, 0.7], [0.7, 0.7]])  # confidence 0.7: mid without priors
    plain = assign_weights(rows, probs, NoiseConfig())
    with_prior = assign_weights(rows, probs, NoiseConfig(priors=["in_crash_state"]))
    assert plain.tier.tolist() == ["mid", "mid"]
    assert with_prior.tier.tolist() == ["high", "mid"]
    assert with_prior.confidence[0] > 0.8 and with_prior.confidence[1] == pytest.approx(0.7)
    low = assign_weights(rows, probs - 0.25, NoiseConfig(priors=["in_crash_state"]))
    assert low.tier[0] == "mid"  # 0.45 -> 0.766: from the rest up to mid


def _mixed_rows() -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(120):
        rows.append(
            _row(
                i,
                i % 2,
                project=("zlib", "curl", "lcms")[i % 3],
                source=("osv", "nvd")[(i // 3) % 2],
                in_crash_state=bool(rng.random() < 0.2),
                n_changed=int(rng.integers(1, 4)),
            )
        )
    return rows, rng.random((4, len(rows)))


def test_report_accounts_for_every_row_and_files_lose_nothing(tmp_path):
    rows, probs = _mixed_rows()
    cfg = NoiseConfig(priors=["in_crash_state"])
    result = assign_weights(rows, probs, cfg)
    plain = assign_weights(rows, probs, NoiseConfig())
    report = noise_report(rows, result, cfg, without_priors=plain)
    n = len(rows)
    assert report["n"] == n and report["kept"] == int((result.tier != "dropped").sum())
    assert sum(report["tiers"][t]["count"] for t in TIERS) == n
    assert sum(report["tiers"][t]["share"] for t in TIERS) == pytest.approx(1.0)
    assert report["weight_sum"] == pytest.approx(result.weight.sum())
    labels = Counter(r["target"] for r in rows)
    assert sum(report["tiers"][t]["label_1"] for t in TIERS) == labels[1]
    for part, key in (("per_source", "source"), ("per_project", "project")):
        expected = Counter(r[key] for r in rows)
        assert {k: v["n"] for k, v in report[part].items()} == dict(expected)
        for row in report[part].values():
            assert row["n"] == sum(row[t] for t in TIERS)
            assert row["kept"] == row["high"] + row["mid"] + row["sampled"]
    effect = report["priors_effect"]
    assert effect["without"] == {t: int((plain.tier == t).sum()) for t in TIERS}
    assert effect["with"] == {t: int((result.tier == t).sum()) for t in TIERS}
    assert report["tiers"]["high"]["in_crash_state_share"] >= 0

    kept = write_weighted(rows, result, tmp_path / "weighted.jsonl")
    dropped = write_dropped(rows, result, tmp_path / "dropped.jsonl", cfg)
    assert kept == report["kept"] and dropped == report["dropped"] and kept + dropped == n
    weighted_rows = list(read_jsonl(tmp_path / "weighted.jsonl"))
    dropped_rows = list(read_jsonl(tmp_path / "dropped.jsonl"))
    assert sorted(r["id"] for r in weighted_rows + dropped_rows) == sorted(r["id"] for r in rows)
    by_id = {r["id"]: i for i, r in enumerate(rows)}
    for r in weighted_rows:
        i = by_id[r["id"]]
        assert r["weight"] == result.weight[i] > 0 and r["noise_tier"] == result.tier[i]
        assert r["noise_confidence"] == pytest.approx(result.confidence[i])
        assert r["func"] == rows[i]["func"] and r["project"] == rows[i]["project"]
    assert all(r["noise_reason"] == DROP_REASON and r["weight"] == 0 for r in dropped_rows)
    assert "below mid_confidence 0.6" in dropped_rows[0]["noise_detail"]
    for key in ("source", "project"):
        total = Counter(r[key] for r in weighted_rows) + Counter(r[key] for r in dropped_rows)
        assert total == Counter(r[key] for r in rows)


def test_markdown_tables_stay_narrow():
    rows, probs = _mixed_rows()
    cfg = NoiseConfig(priors=["single_change"])
    result = assign_weights(rows, probs, cfg)
    text = noise_markdown(
        noise_report(rows, result, cfg, without_priors=assign_weights(rows, probs, NoiseConfig()))
    )
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    assert table_lines and max(line.count("|") - 1 for line in table_lines) <= 7
    assert f"{len(rows)} collected functions" in text
    assert "Rows that changed tier" in text and "| curl |" in text


def test_real_fix_rows_are_weighted(shared_data, tmp_path):
    """Rows of the shared OSS-Fuzz fixes (no id, ``osv_id``): ids are derived, nothing lost."""
    path = shared_data / "ossfuzz_fixes.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in islice(fh, 300)]
    probs = np.random.default_rng(0).random((2, len(rows)))
    cfg = NoiseConfig(priors=["in_crash_state", "single_change"])
    result = assign_weights(rows, probs, cfg)
    kept = write_weighted(rows, result, tmp_path / "w.jsonl")
    dropped = write_dropped(rows, result, tmp_path / "d.jsonl", cfg)
    assert kept + dropped == len(rows) == noise_report(rows, result, cfg)["n"]
    assert noise_report(rows, result, cfg)["tiers"]["high"]["in_crash_state_share"] is not None
