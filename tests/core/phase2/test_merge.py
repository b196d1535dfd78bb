"""Merge: the project split, the distribution check's bounds, merged inputs through the real
loaders and a real preprocessing run (dedup keeps the evaluation copy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from streamguard_core.collect.records import CollectedFunction, function_id, pair_id
from streamguard_core.config import DataConfig, FieldMap, MergeConfig, PreprocessConfig
from streamguard_core.data.loaders import iter_records
from streamguard_core.data.synthetic import generate_synthetic
from streamguard_core.io import read_jsonl, write_jsonl
from streamguard_core.phase2.merge import (
    SUMMARY_FILE,
    distribution_check,
    distribution_markdown,
    distribution_plot,
    split_projects,
    write_merged_inputs,
)
from streamguard_core.preprocess.run import preprocess

PROJECTS = [f"proj{i}" for i in range(8)]


# --------------------------------------------------------------------------- project split


def test_split_projects_takes_a_stable_seeded_share():
    cfg = MergeConfig(test_project_fraction=0.25, split_seed=3)
    train, test = split_projects(PROJECTS + PROJECTS[:3], cfg)  # repeats do not count
    assert len(test) == 2 and sorted(train + test) == PROJECTS and not set(train) & set(test)
    assert split_projects(list(reversed(PROJECTS)), cfg) == (train, test)
    others = {tuple(split_projects(PROJECTS, MergeConfig(split_seed=s))[1]) for s in range(6)}
    assert len(others) > 1  # the seed chooses
    assert split_projects(["a", "b"], MergeConfig(test_project_fraction=0.1))[1] != []
    assert split_projects(["a"], MergeConfig(test_project_fraction=0.5)) == (["a"], [])
    assert split_projects(PROJECTS, MergeConfig(test_project_fraction=0.0)) == (PROJECTS, [])
    # round(0.9 * 3) = 3 would leave nothing to train on: one project stays
    assert len(split_projects(["a", "b", "c"], MergeConfig(test_project_fraction=0.9))[0]) == 1


def test_split_projects_is_the_same_in_another_process():
    """No reliance on Python's per-process string hash."""
    code = (
        "from streamguard_core.config import MergeConfig;"
        "from streamguard_core.phase2.merge import split_projects;"
        f"print(split_projects({PROJECTS!r}, MergeConfig(split_seed=3))[1])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2)
    }
    assert outputs == {f"{split_projects(PROJECTS, MergeConfig(split_seed=3))[1]}\n"}


def test_split_projects_given_and_unknown():
    cfg = MergeConfig(test_projects=["proj2", "proj5"])
    assert split_projects(PROJECTS, cfg) == (
        [p for p in PROJECTS if p not in ("proj2", "proj5")],
        ["proj2", "proj5"],
    )
    with pytest.raises(ValueError, match=r"\['nope', 'zz'\]"):
        split_projects(PROJECTS, MergeConfig(test_projects=["proj1", "zz", "nope"]))


# --------------------------------------------------------------------------- distribution check


def _phase1_rows() -> list[dict]:
    """100 records: half vulnerable, lengths 10..109, projects A (60) and B (40)."""
    return [
        {"id": f"devign:{i}", "func": "x" * (10 + i), "label": i % 2, "source": "devign",
         "project": "A" if i < 60 else "B", "weight": 1.0, "meta": {}}
        for i in range(100)
    ]  # fmt: skip


def _collected(n: int, weight: float, length: int = 1000, label: int = 1) -> list[dict]:
    return [
        {"id": f"osv:V:{i}:pre", "func": "y" * length, "target": label, "source": "osv",
         "origin": "collected", "project": "C", "weight": weight}
        for i in range(n)
    ]  # fmt: skip


BOUNDS = ("max_label_shift", "max_length_ks", "max_collected_share", "max_project_tv")
MEASURE = {
    "max_label_shift": lambda c: abs(c["label"]["shift"]),
    "max_length_ks": lambda c: c["length"]["ks"],
    "max_collected_share": lambda c: c["sources"]["collected_share"],
    "max_project_tv": lambda c: c["projects"]["tv"],
}


def test_distribution_check_measures_by_hand():
    before = _phase1_rows()
    after = before + _collected(20, 0.5)
    check = distribution_check(before, after, MergeConfig())
    # total weight 110: 60 vulnerable, 10 of it collected (project C), all longer than phase 1
    assert check["label"]["before"] == pytest.approx(0.5)
    assert check["label"]["after"] == pytest.approx(60 / 110)
    assert check["label"]["shift"] == pytest.approx(60 / 110 - 0.5)
    assert check["sources"]["collected_share"] == pytest.approx(10 / 110)
    assert check["sources"]["after"] == pytest.approx({"devign": 100 / 110, "osv": 10 / 110})
    assert check["projects"]["tv"] == pytest.approx(10 / 110)
    assert check["length"]["ks"] == pytest.approx(10 / 110)
    assert check["length"]["before"] == {"p10": 19.0, "p50": 59.0, "p90": 99.0}
    assert check["length"]["after"] == {"p10": 20.0, "p50": 64.0, "p90": 108.0}  # weight 1 of 110
    assert check["counts"]["after"] == {"rows": 120, "weight": 110.0}
    # unit weights: the weighted KS is scipy's
    unit = distribution_check(before, before + _collected(20, 1.0), MergeConfig())
    assert unit["length"]["ks"] == pytest.approx(unit["length"]["ks_unweighted"]["statistic"])
    same = distribution_check(before, before, MergeConfig())
    assert same["warnings"] == [] and same["length"]["ks"] == 0 and same["projects"]["tv"] == 0


@pytest.mark.parametrize("bound", BOUNDS)
def test_each_warning_fires_exactly_when_its_bound_is_passed(bound):
    before = _phase1_rows()
    after = before + _collected(40, 1.0, label=1)
    measured = MEASURE[bound](distribution_check(before, after, MergeConfig()))
    assert measured > 0.05
    loose = dict.fromkeys(BOUNDS, 1.0)
    at_bound = distribution_check(before, after, MergeConfig(**{**loose, bound: measured}))
    assert at_bound["warnings"] == []  # equal is not past the bound
    passed = distribution_check(
        before, after, MergeConfig(**{**loose, bound: round(measured - 0.001, 6)})
    )
    assert len(passed["warnings"]) == 1
    assert bound in passed["warnings"][0] and f"{measured:.3f}" in passed["warnings"][0]


def test_distribution_markdown_and_plot(tmp_path):
    before = _phase1_rows()
    after = before + _collected(60, 1.0)
    check = distribution_check(before, after, MergeConfig())
    text = distribution_markdown(check)
    assert len(check["warnings"]) >= 2 and all(w in text for w in check["warnings"])
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert max(line.count("|") - 1 for line in tables) <= 7
    png = distribution_plot(before, after, tmp_path / "lengths.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- merged inputs


def _collected_row(func: str, target: int, project: str, i: int, weight: float | None) -> dict:
    repo, commit = f"https://x/{project}", f"{i:040x}"
    pair = pair_id(repo, commit, "src/a.c", f"f{i}", f"OSV-{i}")
    row = CollectedFunction(
        id=function_id("osv", f"OSV-{i}", pair, target), func=func, target=target, source="osv",
        project=project, vuln_id=f"OSV-{i}", repo=repo, fix_commit=commit, parent_commit="0" * 40,
        file="src/a.c", function=f"f{i}", pair_id=pair, in_crash_state=True,
        n_changed_functions=1, cwe="CWE-787",
    ).to_dict()  # fmt: skip
    if weight is not None:
        row.update(weight=weight, noise_tier="mid", noise_confidence=0.7)
    return row


@pytest.fixture()
def phase1_dir(tmp_path):
    """A phase-1 data dir: synthetic records as preprocessing writes them (train, valid)."""
    records = generate_synthetic(pairs_per_cwe=2, seed=4)
    data = tmp_path / "phase1_data"
    half = len(records) // 2
    for split, part in (("train", records[:half]), ("valid", records[half:])):
        rows = []
        for r in part:
            row = r.to_dict()
            row["meta"] = {**row["meta"], "language": "c", "file": "<synthetic>"}
            row.update(split=split, n_tokens=12)  # processed extras are not carried over
            rows.append(row)
        write_jsonl(data / split / "records.jsonl", rows)
    return data


def _load(path, split):
    return [r for r in iter_records(path, fmt="jsonl", fields=FieldMap(id="id"), split=split)]


def test_merged_inputs_read_back_by_the_loaders(phase1_dir, tmp_path):
    p1_train = list(read_jsonl(phase1_dir / "train" / "records.jsonl"))
    p1_valid = list(read_jsonl(phase1_dir / "valid" / "records.jsonl"))
    weighted = [
        _collected_row("int f1(int *p) { return p[1]; }", 1, "zlib", 1, 0.3),
        _collected_row("int f2(int *p) { return p[2]; }", 0, "curl", 2, 1.0),
    ]
    test_rows = [_collected_row("int g(char *s) { return s[9]; }", 1, "lcms", 3, None)]
    paths = write_merged_inputs(phase1_dir, weighted, test_rows, tmp_path / "merged")
    assert set(paths) == {"train", "valid", "test"}

    train = _load(paths["train"], "train")
    assert [r.id for r in train] == [f"train:{r['id']}" for r in p1_train + weighted]
    by_id = {r.id: r for r in train}
    for row in weighted:
        loaded = by_id[f"train:{row['id']}"]
        assert loaded.weight == row["weight"] and loaded.label == row["target"]
        assert loaded.project == row["project"] and loaded.group == row["pair_id"]
        assert loaded.meta["origin"] == "collected" and loaded.meta["source"] == "osv"
        assert loaded.meta["noise_tier"] == "mid" and loaded.meta["language"] == "c"
        assert loaded.cwe == "CWE-787" and loaded.commit_id == row["fix_commit"]
    for row in p1_train:
        loaded = by_id[f"train:{row['id']}"]
        assert (loaded.label, loaded.weight, loaded.func) == (row["label"], 1.0, row["func"])
        assert loaded.group == row["group"] and loaded.meta["origin"] == "phase1"
        assert "n_tokens" not in loaded.meta and loaded.meta["source"] == row["source"]
    valid = _load(paths["valid"], "valid")
    assert [(r.func, r.label) for r in valid] == [(r["func"], r["label"]) for r in p1_valid]
    test = _load(paths["test"], "test")
    assert len(test) == 1 and test[0].weight == 1.0 and "noise_tier" not in test[0].meta
    assert all(r.meta["split"] == "test" for r in test)

    summary = json.loads((tmp_path / "merged" / SUMMARY_FILE).read_text())
    assert summary["splits"]["train"]["rows"] == len(p1_train) + 2
    assert summary["splits"]["train"]["per_origin"] == {"collected": 2, "phase1": len(p1_train)}
    assert summary["splits"]["train"]["weight"] == pytest.approx(len(p1_train) + 1.3)
    assert summary["splits"]["test"]["per_project"] == {"lcms": 1}
    assert summary["collected_projects"] == {"train": ["curl", "zlib"], "test": ["lcms"]}


def test_merged_inputs_refuse_a_project_on_both_sides_and_count_repeats(phase1_dir, tmp_path):
    row = _collected_row("int f(void) { return 1; }", 1, "zlib", 1, 1.0)
    with pytest.raises(ValueError, match="zlib"):
        write_merged_inputs(phase1_dir, [row], [{**row, "weight": None}], tmp_path / "m1")
    with pytest.raises(ValueError, match="no weight"):
        write_merged_inputs(phase1_dir, [{**row, "weight": None}], [], tmp_path / "m2")
    paths = write_merged_inputs(phase1_dir, [row, row], [], tmp_path / "m3")
    assert "test" not in paths  # no phase-1 test records, no test projects
    summary = json.loads((tmp_path / "m3" / SUMMARY_FILE).read_text())
    assert summary["duplicate_ids"] == {"train": 1}
    assert summary["splits"]["train"]["per_origin"]["collected"] == 1


def test_preprocessing_drops_the_train_copy_of_an_evaluation_function(phase1_dir, tmp_path):
    """A collected train function equal to a phase-1 valid function (comments and spacing
    aside) leaves train; a phase-1 train function equal to a collected test one leaves train."""
    p1_train = list(read_jsonl(phase1_dir / "train" / "records.jsonl"))
    p1_valid = list(read_jsonl(phase1_dir / "valid" / "records.jsonl"))
    leaked = "/* collected */\n" + p1_valid[0]["func"].replace("\n", "\n  ")
    fresh = "int fresh_fn(int *buf, int n) {\n  return n > 0 ? buf[n - 1] : 0;\n}\n"
    weighted = [
        _collected_row(leaked, p1_valid[0]["label"], "zlib", 1, 1.0),
        _collected_row(fresh, 1, "zlib", 2, 0.3),
    ]
    test_rows = [_collected_row(p1_train[0]["func"], p1_train[0]["label"], "lcms", 3, None)]
    paths = write_merged_inputs(phase1_dir, weighted, test_rows, tmp_path / "merged")
    out = tmp_path / "processed"
    meta = preprocess(
        DataConfig(
            inputs=[f"{s}={p}" for s, p in paths.items()],
            format="jsonl",
            fields=FieldMap(id="id"),
            split_strategy="explicit",
            dedup="normalized",
        ),
        PreprocessConfig(workers=1, vocab_size=300, max_seq_len=64),
        out,
        show_progress=False,
    )
    kept = {s: {r["id"] for r in read_jsonl(out / s / "records.jsonl")} for s in paths}
    assert f"train:{weighted[0]['id']}" not in kept["train"]
    assert f"valid:{p1_valid[0]['id']}" in kept["valid"]
    assert f"train:{weighted[1]['id']}" in kept["train"]
    assert f"train:{p1_train[0]['id']}" not in kept["train"]
    assert f"test:{test_rows[0]['id']}" in kept["test"]
    removed = {r["id"]: r for r in read_jsonl(out / "duplicates.jsonl")}
    assert removed[f"train:{weighted[0]['id']}"]["duplicate_of"] == f"valid:{p1_valid[0]['id']}"
    assert removed[f"train:{p1_train[0]['id']}"]["duplicate_of_split"] == "test"
    report = json.loads((out / "leakage_report.json").read_text())
    assert report["removed_cross_split"]["train<-valid"] >= 1
    assert report["removed_cross_split"]["train<-test"] >= 1
    assert all(v == 0 for v in report["cross_split_overlap_remaining"].values())
    counts = meta["counts"]
    assert counts["read"] == counts["kept"] + counts["rejected"] + counts["deduplicated"]
    weights = {r["id"]: r["weight"] for r in read_jsonl(out / "train" / "records.jsonl")}
    assert weights[f"train:{weighted[1]['id']}"] == 0.3
    assert np.isclose(sum(weights.values()), len(weights) - 0.7)
