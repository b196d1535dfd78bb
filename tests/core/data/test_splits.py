"""Tests for streamguard_core.data.splits: split strategies, CodeXGLUE index, deduplication."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamguard_core.data.normalize import normalized_key
from streamguard_core.data.splits import (
    SPLITS,
    assign_splits,
    deduplicate,
    load_codexglue_index,
    resolve_strategy,
)
from streamguard_core.schema import FunctionRecord

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"

# Real-looking C snippets; each template is made unique per record by its function name.
_TEMPLATES = (
    (
        "static int {name}(const char *src, size_t len)\n{{\n    char buf[64];\n"
        "    if (len >= sizeof(buf))\n        return -1;\n    memcpy(buf, src, len);\n"
        "    return buf[0];\n}}\n"
    ),
    (
        "int {name}(struct ctx *c, int n)\n{{\n    int *p = malloc(n * sizeof(int));\n"
        "    if (!p)\n        return -ENOMEM;\n    c->data = p;\n    return 0;\n}}\n"
    ),
    "void {name}(char *dst, const char *src)\n{{\n    strcpy(dst, src);\n}}\n",
    (
        "static void {name}(AVCodecContext *avctx)\n{{\n    av_freep(&avctx->priv_data);\n"
        "    avctx->priv_data = NULL;\n}}\n"
    ),
)


def make_func(i: int) -> str:
    return _TEMPLATES[i % len(_TEMPLATES)].format(name=f"handler_{i}")


def rec(i: int, label: int = 0, func: str | None = None, **kw) -> FunctionRecord:
    meta = {"file": kw.pop("file", "data/input.jsonl"), "line": kw.pop("line", i + 1)}
    meta.update(kw.pop("meta", {}))
    return FunctionRecord(
        id=kw.pop("id", f"r{i}"),
        func=func if func is not None else make_func(i),
        label=label,
        source="test",
        meta=meta,
        **kw,
    )


def ids(records: list[FunctionRecord]) -> list[str]:
    return [r.id for r in records]


def assignment(result) -> dict[str, str]:
    return {r.id: s for s, rs in result.splits.items() for r in rs}


def balanced(n: int, vuln_every: int = 4) -> list[FunctionRecord]:
    return [rec(i, label=int(i % vuln_every == 0)) for i in range(n)]


# --------------------------------------------------------------------------------------------
# strategy resolution
# --------------------------------------------------------------------------------------------


def test_resolve_strategy_auto_and_errors():
    plain = [rec(0), rec(1)]
    explicit = [rec(0, meta={"split": "valid"}), rec(1)]
    assert resolve_strategy(plain, "auto", {0: "train"}) == "codexglue"
    assert resolve_strategy(explicit, "auto", None) == "explicit"
    assert resolve_strategy(plain, "auto", None) == "random"
    assert resolve_strategy(plain, "time", None) == "time"
    with pytest.raises(ValueError, match="unknown split strategy"):
        resolve_strategy(plain, "by_moon_phase", None)
    with pytest.raises(ValueError, match="unknown split strategy"):
        assign_splits(plain, strategy="by_moon_phase")
    with pytest.raises(ValueError, match="codexglue"):
        assign_splits(plain, strategy="codexglue")


def test_bad_ratios_rejected():
    with pytest.raises(ValueError):
        assign_splits(balanced(10), strategy="random", ratios=(0.0, 0.5, 0.5))
    with pytest.raises(ValueError):
        assign_splits(balanced(10), strategy="random", ratios=(0.8, 0.2))


# --------------------------------------------------------------------------------------------
# random (stratified)
# --------------------------------------------------------------------------------------------


def test_random_deterministic_and_seed_dependent():
    records = balanced(200)
    a = assign_splits(records, strategy="random", seed=7)
    b = assign_splits(records, strategy="random", seed=7)
    c = assign_splits(records, strategy="random", seed=8)
    assert a.strategy == "random"
    assert assignment(a) == assignment(b)
    assert assignment(a) != assignment(c)
    assert a.rejects == [] and a.warnings == []


def test_random_ratios_stratification_and_order():
    records = balanced(400, vuln_every=4)  # 100 vulnerable, 300 safe
    result = assign_splits(records, strategy="random", ratios=(0.8, 0.1, 0.1), seed=1)
    counts = {s: len(rs) for s, rs in result.splits.items()}
    assert counts == {"train": 320, "valid": 40, "test": 40}
    for split, rs in result.splits.items():
        vuln = sum(r.label for r in rs)
        assert vuln / len(rs) == pytest.approx(0.25), split
        # order within a split is the input order
        positions = [int(r.id[1:]) for r in rs]
        assert positions == sorted(positions)
    # every record placed exactly once
    assert sorted(r.id for rs in result.splits.values() for r in rs) == sorted(ids(records))


def test_random_small_classes_get_valid_and_test():
    # 10 safe + 12 vulnerable: every class has >= 10 records, so valid/test are non-empty.
    records = [rec(i, label=0) for i in range(10)] + [rec(10 + i, label=1) for i in range(12)]
    result = assign_splits(records, strategy="random", ratios=(0.9, 0.05, 0.05), seed=3)
    for split in ("valid", "test"):
        labels = {r.label for r in result.splits[split]}
        assert labels == {0, 1}, split
    assert sum(len(rs) for rs in result.splits.values()) == 22


def test_random_zero_ratio_split_stays_empty_without_warning():
    result = assign_splits(balanced(50), strategy="random", ratios=(0.8, 0.2, 0.0), seed=0)
    assert result.splits["test"] == []
    assert len(result.splits["valid"]) > 0
    assert result.warnings == []


# --------------------------------------------------------------------------------------------
# codexglue / explicit
# --------------------------------------------------------------------------------------------


def test_codexglue_strategy_and_rejects():
    index = {10: "train", 11: "valid", 12: "test", 13: "train"}
    records = [
        rec(0, idx=10),
        rec(1, idx=11),
        rec(2, idx=12),
        rec(3, idx=13),
        rec(4, idx=999, file="devign.jsonl.gz", line=42),
        rec(5, idx=None, file="devign.jsonl.gz", line=43),
    ]
    result = assign_splits(records, codexglue_index=index)
    assert result.strategy == "codexglue"
    assert {s: ids(rs) for s, rs in result.splits.items()} == {
        "train": ["r0", "r3"],
        "valid": ["r1"],
        "test": ["r2"],
    }
    assert [(r.file, r.line, r.reason, r.record_id, r.stage) for r in result.rejects] == [
        ("devign.jsonl.gz", 42, "no_split", "r4", "split"),
        ("devign.jsonl.gz", 43, "no_split", "r5", "split"),
    ]
    assert result.rejects[0].detail == "idx 999 is not in the CodeXGLUE index files"


def test_codexglue_index_wins_over_explicit_split_with_one_warning():
    index = {1: "train", 2: "train", 3: "test"}
    records = [
        rec(0, idx=1, meta={"split": "valid"}),
        rec(1, idx=2, meta={"split": "valid"}),
        rec(2, idx=3, meta={"split": "test"}),
    ]
    result = assign_splits(records, strategy="auto", codexglue_index=index)
    assert ids(result.splits["train"]) == ["r0", "r1"]
    assert ids(result.splits["test"]) == ["r2"]
    disagree = [w for w in result.warnings if "disagree" in w]
    assert len(disagree) == 1 and disagree[0].startswith("2 record")


def test_explicit_strategy_and_rejects():
    records = [
        rec(0, meta={"split": "train"}),
        rec(1, meta={"split": "test"}),
        rec(2, meta={"split": "valid"}),
        rec(3, meta={"split": "holdout"}, file="extra.jsonl", line=7),
        rec(4, file="extra.jsonl", line=8),
    ]
    result = assign_splits(records)
    assert result.strategy == "explicit"
    assert {s: ids(rs) for s, rs in result.splits.items()} == {
        "train": ["r0"],
        "valid": ["r2"],
        "test": ["r1"],
    }
    assert [(r.file, r.line, r.reason, r.record_id) for r in result.rejects] == [
        ("extra.jsonl", 7, "no_split", "r3"),
        ("extra.jsonl", 8, "no_split", "r4"),
    ]


# --------------------------------------------------------------------------------------------
# project / group
# --------------------------------------------------------------------------------------------


def _projects_records() -> list[FunctionRecord]:
    names = [f"proj{p}" for p in range(12)]
    records = []
    i = 0
    for p, name in enumerate(names):
        for _ in range(5 + p):  # projects of different sizes
            records.append(rec(i, label=i % 2, project=name))
            i += 1
    records.append(rec(i, project=None))
    records.append(rec(i + 1, project=None))
    return records


def test_project_split_keeps_projects_whole_and_is_deterministic():
    records = _projects_records()
    a = assign_splits(records, strategy="project", seed=5)
    b = assign_splits(records, strategy="project", seed=5)
    assert a.strategy == "project"
    assert assignment(a) == assignment(b)
    where: dict[str, set[str]] = {}
    for split, rs in a.splits.items():
        for r in rs:
            where.setdefault(r.project or "<none>", set()).add(split)
    assert all(len(s) == 1 for s in where.values()), where
    assert all(a.splits[s] for s in SPLITS)
    n = len(records)
    assert len(a.splits["train"]) / n == pytest.approx(0.8, abs=0.15)
    assert a.warnings == []
    seeds = {
        tuple(sorted(assignment(assign_splits(records, "project", seed=s)).items()))
        for s in range(5)
    }
    assert len(seeds) > 1


def test_project_split_warns_when_a_split_is_empty():
    records = [rec(i, project="qemu" if i < 6 else "FFmpeg") for i in range(10)]
    result = assign_splits(records, strategy="project", seed=0)
    assert sum(len(rs) for rs in result.splits.values()) == 10
    empty = [s for s in SPLITS if not result.splits[s]]
    assert empty
    assert any("empty" in w and "project" in w for w in result.warnings)


def test_group_split_keeps_groups_whole_and_none_is_singleton():
    records = []
    for g in range(15):
        for k in range(3):
            records.append(rec(len(records), label=k % 2, group=f"CWE121_{g}"))
    singles = [rec(len(records) + j, group=None) for j in range(10)]
    records += singles
    result = assign_splits(records, strategy="group", seed=11)
    assert result.strategy == "group"
    where: dict[str, set[str]] = {}
    for split, rs in result.splits.items():
        for r in rs:
            if r.group is not None:
                where.setdefault(r.group, set()).add(split)
    assert len(where) == 15 and all(len(s) == 1 for s in where.values())
    assert all(result.splits[s] for s in SPLITS)
    # records without a group are singletons: each is placed on its own
    placed = assignment(result)
    assert all(r.id in placed for r in singles)
    assert sum(len(rs) for rs in result.splits.values()) == len(records)
    assert assignment(result) == assignment(assign_splits(records, strategy="group", seed=11))


# --------------------------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------------------------


def test_time_split_order_and_rejects():
    dates = [f"2014-{m:02d}-01" for m in range(1, 13)] * 2  # 24 dated records, ties by month
    records = [rec(i, meta={"date": d}) for i, d in enumerate(dates)]
    records[3].meta["date"] = "2014-04-01T10:00:00Z"  # aware, later than naive 2014-04-01
    records.append(rec(24, file="commits.jsonl", line=99))  # no date
    records.append(rec(25, meta={"date": "last tuesday"}, file="commits.jsonl", line=100))
    result = assign_splits(records, strategy="time", ratios=(0.5, 0.25, 0.25))
    assert result.strategy == "time"
    assert [(r.reason, r.file, r.line, r.record_id) for r in result.rejects] == [
        ("missing_date", "commits.jsonl", 99, "r24"),
        ("missing_date", "commits.jsonl", 100, "r25"),
    ]
    counts = {s: len(rs) for s, rs in result.splits.items()}
    assert counts == {"train": 12, "valid": 6, "test": 6}

    def when(r):
        d = datetime.fromisoformat(r.meta["date"])
        return d if d.tzinfo else d.replace(tzinfo=UTC)

    assert max(map(when, result.splits["train"])) <= min(map(when, result.splits["valid"]))
    assert max(map(when, result.splits["valid"])) <= min(map(when, result.splits["test"]))
    # ties broken by input order: both June records are train (positions 10 and 11 of 12)
    assert {"r5", "r17"} <= set(ids(result.splits["train"]))
    # within a split, input order
    for rs in result.splits.values():
        positions = [int(r.id[1:]) for r in rs]
        assert positions == sorted(positions)
    assert result == assign_splits(records, strategy="time", ratios=(0.5, 0.25, 0.25), seed=9)


# --------------------------------------------------------------------------------------------
# CodeXGLUE index files
# --------------------------------------------------------------------------------------------


def test_load_codexglue_index(tmp_path):
    (tmp_path / "train.txt").write_text("1\n2\n\n3\n")
    (tmp_path / "valid.txt").write_text("10\r\n11\r\n")
    index = load_codexglue_index(tmp_path)
    assert index == {1: "train", 2: "train", 3: "train", 10: "valid", 11: "valid"}
    (tmp_path / "test.txt").write_text("20\n")
    assert load_codexglue_index(str(tmp_path))[20] == "test"


def test_load_codexglue_index_missing(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_codexglue_index(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        load_codexglue_index(empty)


def test_load_codexglue_index_bad_line(tmp_path):
    (tmp_path / "train.txt").write_text("1\n2\n")
    (tmp_path / "valid.txt").write_text("5\nsix\n")
    with pytest.raises(ValueError, match=r"valid\.txt:2"):
        load_codexglue_index(tmp_path)


# --------------------------------------------------------------------------------------------
# deduplication
# --------------------------------------------------------------------------------------------

VULN = (
    "static int parse_header(const uint8_t *buf, int size)\n{\n    uint8_t tmp[16];\n"
    "    memcpy(tmp, buf, size);\n    return tmp[0];\n}\n"
)
VULN_REFORMATTED = (
    "static int parse_header(const uint8_t *buf, int size) {\n"
    "    /* copy the header */\n    uint8_t tmp[16];\n"
    "    memcpy(tmp,buf,size); // no bound check\n    return tmp[0];\n}"
)
VULN_RENAMED = (
    "static int read_hdr(const uint8_t *data, int n)\n{\n    uint8_t local[32];\n"
    "    memcpy(local, data, n);\n    return local[0];\n}\n"
)
OTHER = "void free_ctx(struct ctx *c)\n{\n    if (c)\n        free(c->buf);\n    free(c);\n}\n"


def _check_report_consistency(result, report):
    for s in SPLITS:
        assert report["counts_after"][s] == len(result.splits[s])
        removed_here = sum(1 for row in result.removed if row["split"] == s)
        assert report["counts_before"][s] - removed_here == report["counts_after"][s]
    within = sum(sum(v.values()) for v in report["removed_within_split"].values())
    cross = sum(report["removed_cross_split"].values())
    assert within + cross == report["total_removed"] == len(result.removed)
    assert report["label_conflicts"] == sum(r["label_conflict"] for r in result.removed)
    json.dumps(report)  # JSON-serialisable


def test_dedup_exact_within_split_keeps_first():
    splits = {
        "train": [
            rec(0, func=VULN, label=1),
            rec(1, func=OTHER),
            rec(2, func="\n" + VULN + "  \n", label=1, line=30),
        ],
        "valid": [],
        "test": [],
    }
    result = deduplicate(splits, mode="exact")
    assert ids(result.splits["train"]) == ["r0", "r1"]
    assert result.removed == [
        {
            "id": "r2",
            "split": "train",
            "kind": "exact",
            "duplicate_of": "r0",
            "duplicate_of_split": "train",
            "label_conflict": False,
            "file": "data/input.jsonl",
            "line": 30,
        }
    ]
    assert result.report["removed_within_split"]["train"] == {"exact": 1, "normalized": 0}
    _check_report_consistency(result, result.report)


def test_dedup_normalized_cross_split_precedence():
    splits = {
        "train": [rec(0, func=VULN, label=1), rec(1, func=OTHER), rec(2, func=make_func(2))],
        "valid": [rec(10, func=VULN_REFORMATTED, label=1), rec(11, func=make_func(11))],
        "test": [rec(20, func=VULN_RENAMED, label=0), rec(21, func=OTHER)],
    }
    result = deduplicate(splits, mode="normalized")
    # test keeps everything; valid loses the reformatted copy; train loses both copies
    assert ids(result.splits["test"]) == ["r20", "r21"]
    assert ids(result.splits["valid"]) == ["r11"]
    assert ids(result.splits["train"]) == ["r2"]
    rows = {r["id"]: r for r in result.removed}
    assert rows["r10"]["duplicate_of"] == "r20" and rows["r10"]["kind"] == "normalized"
    assert rows["r10"]["label_conflict"] is True  # label 1 vs kept label 0
    assert rows["r0"]["duplicate_of"] == "r20" and rows["r0"]["duplicate_of_split"] == "test"
    assert rows["r1"]["kind"] == "exact" and rows["r1"]["duplicate_of"] == "r21"
    rep = result.report
    assert rep["removed_cross_split"] == {"train<-valid": 0, "train<-test": 2, "valid<-test": 1}
    assert rep["label_conflicts"] == 2  # r10 and r0 (label 1) vs r20 (label 0)
    assert rep["cross_split_overlap_remaining"] == {
        "train<-valid": 0,
        "train<-test": 0,
        "valid<-test": 0,
    }
    assert rep["mode"] == "normalized" and rep["total_removed"] == 3
    assert len(rep["examples"]) == 3
    assert all(len(e["func_preview"]) <= 120 for e in rep["examples"])
    _check_report_consistency(result, rep)
    # examples capped
    assert len(deduplicate(splits, max_examples=1).report["examples"]) == 1


def test_dedup_exact_mode_reports_remaining_normalized_overlap():
    splits = {
        "train": [rec(0, func=VULN_RENAMED, label=1), rec(1, func=OTHER)],
        "valid": [],
        "test": [rec(20, func=VULN, label=1), rec(21, func=OTHER)],
    }
    result = deduplicate(splits, mode="exact")
    assert ids(result.splits["train"]) == ["r0"]  # renamed copy is not an exact duplicate
    assert result.report["cross_split_overlap_remaining"]["train<-test"] == 1
    _check_report_consistency(result, result.report)


def test_dedup_mode_none_keeps_everything_but_reports_overlap():
    splits = {
        "train": [rec(0, func=VULN), rec(1, func=OTHER), rec(2, func=VULN_RENAMED)],
        "valid": [rec(10, func=VULN_REFORMATTED)],
        "test": [rec(20, func=OTHER)],
    }
    result = deduplicate(splits, mode="none")
    assert {s: ids(rs) for s, rs in result.splits.items()} == {
        s: ids(rs) for s, rs in splits.items()
    }
    assert result.removed == []
    rep = result.report
    assert rep["total_removed"] == 0
    assert rep["counts_before"] == rep["counts_after"] == {"train": 3, "valid": 1, "test": 1}
    assert rep["cross_split_overlap_remaining"] == {
        "train<-valid": 2,  # r0 and r2 normalise like r10
        "train<-test": 1,  # r1 == r20
        "valid<-test": 0,
    }
    _check_report_consistency(result, rep)


def test_dedup_uses_precomputed_normalized_keys():
    a, b = rec(0, func=make_func(0)), rec(1, func=make_func(1))
    splits = {"train": [a], "valid": [], "test": [b]}
    assert deduplicate(splits).removed == []
    # precomputed keys say these two are the same (e.g. computed by a better normaliser)
    keys = {"r0": "k-shared", "r1": "k-shared"}
    result = deduplicate(splits, normalized_keys=keys)
    assert ids(result.splits["train"]) == [] and ids(result.splits["test"]) == ["r1"]
    assert result.removed[0]["kind"] == "normalized"
    # ids missing from the mapping are computed
    c = rec(2, func=VULN_RENAMED)
    d = rec(3, func=VULN)
    partial = deduplicate({"train": [c], "test": [d]}, normalized_keys={"r3": normalized_key(VULN)})
    assert ids(partial.splits["train"]) == []
    assert set(partial.splits) == set(SPLITS)


def test_dedup_unknown_mode():
    with pytest.raises(ValueError, match="dedup mode"):
        deduplicate({"train": []}, mode="fuzzy")


# --------------------------------------------------------------------------------------------
# real data (only when ../shared/data is present)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_codexglue_index_matches_devign_valid():
    if not DATA_DIR.exists():
        pytest.skip("../shared/data not present")
    split_dir = DATA_DIR / "codexglue_splits"
    valid_file = DATA_DIR / "devign_valid.jsonl.gz"
    if not split_dir.is_dir() or not valid_file.is_file():
        pytest.skip("codexglue_splits or devign_valid.jsonl.gz not in ../shared/data")
    index = load_codexglue_index(split_dir)
    per_split: dict[str, set[int]] = {s: set() for s in SPLITS}
    for s in SPLITS:
        for line in (split_dir / f"{s}.txt").read_text().splitlines():
            if line.strip():
                per_split[s].add(int(line))
    assert not per_split["train"] & per_split["valid"]
    assert not per_split["train"] & per_split["test"]
    assert not per_split["valid"] & per_split["test"]
    assert len(index) == sum(len(v) for v in per_split.values())
    seen = 0
    with gzip.open(valid_file, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if n >= 200:
                break
            idx = json.loads(line)["idx"]
            assert index.get(idx) == "valid", idx
            seen += 1
    assert seen > 0
