"""Tests for streamguard_core.data.loaders: every input format, gzip, detection, labels, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from streamguard_core.config import FieldMap
from streamguard_core.data.loaders import (
    DataError,
    detect_format,
    iter_records,
    parse_label,
)
from streamguard_core.schema import FunctionRecord, Reject

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"

FUNC_A = "static int add(int a, int b)\n{\n    return a + b;\n}\n"
FUNC_B = "void copy(char *dst, const char *src)\n{\n    strcpy(dst, src);\n}\n"
FUNC_C = "int sum(int *v, int n)\n{\n    int s = 0;\n    for (int i = 0; i < n; i++)\n        s += v[i];\n    return s;\n}\n"  # noqa: E501


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **kw: Any) -> list[FunctionRecord | Reject]:
    return list(iter_records(path, **kw))


def only_records(items: list[FunctionRecord | Reject]) -> list[FunctionRecord]:
    assert all(isinstance(i, FunctionRecord) for i in items), [
        str(i) for i in items if isinstance(i, Reject)
    ]
    return [i for i in items if isinstance(i, FunctionRecord)]


# ----------------------------------------------------------------------------- Devign


def test_devign_function_json_array_idx_is_position(tmp_path: Path) -> None:
    path = tmp_path / "function.json"
    data = [
        {"project": "FFmpeg", "commit_id": "a" * 40, "target": 1, "func": FUNC_A},
        {"project": "qemu", "commit_id": "b" * 40, "target": 0, "func": FUNC_B},
        {"project": "qemu", "commit_id": None, "target": 1, "func": FUNC_C},
    ]
    path.write_text(json.dumps(data), encoding="utf-8")
    assert detect_format(path) == "devign"
    records = only_records(load(path))
    assert [r.idx for r in records] == [0, 1, 2]
    assert [r.id for r in records] == ["devign:0", "devign:1", "devign:2"]
    assert [r.label for r in records] == [1, 0, 1]
    assert [r.func for r in records] == [FUNC_A, FUNC_B, FUNC_C]
    assert [r.project for r in records] == ["FFmpeg", "qemu", "qemu"]
    assert [r.commit_id for r in records] == ["a" * 40, "b" * 40, None]
    assert all(r.source == "devign" for r in records)
    assert [r.meta["line"] for r in records] == [1, 2, 3]
    assert all(r.meta["file"] == str(path) and r.meta["language"] == "c" for r in records)


def test_devign_array_non_object_element_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "function.json"
    path.write_text(
        json.dumps([{"target": 0, "func": FUNC_A}, [1, 2], {"target": 1, "func": FUNC_B}])
    )
    items = load(path, fmt="devign")
    assert isinstance(items[1], Reject)
    assert (items[1].reason, items[1].line, items[1].file) == ("not_an_object", 2, str(path))
    # the element after the bad one keeps its own position as idx
    assert isinstance(items[2], FunctionRecord) and items[2].idx == 2


def test_devign_array_that_is_not_json_raises(tmp_path: Path) -> None:
    path = tmp_path / "function.json"
    path.write_text('[{"target": 0, "func": "int f(){}"}, ')
    with pytest.raises(DataError, match=r"function\.json"):
        load(path, fmt="devign")


# ----------------------------------------------------------------------------- CodeXGLUE


def test_codexglue_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "valid.jsonl",
        [
            {"project": "qemu", "commit_id": "c" * 40, "target": 1, "func": FUNC_A, "idx": 17},
            {"project": "FFmpeg", "commit_id": "d" * 40, "target": 0, "func": FUNC_B, "idx": 4},
        ],
    )
    assert detect_format(path) == "codexglue"
    records = only_records(load(path))
    assert [(r.id, r.idx, r.label, r.project) for r in records] == [
        ("devign:17", 17, 1, "qemu"),
        ("devign:4", 4, 0, "FFmpeg"),
    ]
    assert [r.commit_id for r in records] == ["c" * 40, "d" * 40]
    assert [r.meta["line"] for r in records] == [1, 2]
    assert all(r.source == "devign" for r in records)


def test_codexglue_detected_when_first_function_is_long(tmp_path: Path) -> None:
    # Real Devign functions are often longer than 4 KiB; detection must still see the object.
    long_func = "int f(int *p)\n{\n" + "    p[0]++;\n" * 600 + "    return 0;\n}\n"
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [{"project": "qemu", "commit_id": "e" * 40, "target": 1, "func": long_func, "idx": 9}],
    )
    assert len(path.read_bytes()) > 4096
    assert detect_format(path) == "codexglue"
    (record,) = only_records(load(path))
    assert (record.id, record.source, record.idx) == ("devign:9", "devign", 9)


def test_juliet_content_detected_when_first_function_is_long(tmp_path: Path) -> None:
    # A Juliet file not named "juliet" must still be read from func_anon, never from the
    # label-leaking func text, however long its first function is.
    row = juliet_rows()[0]
    row["func"] = row["func"] + "\r\n/* FLAW: */" * 400
    row["func_anon"] = "void id_1()\n{\n" + "    b[0] = 0;\n" * 400 + "}"
    path = write_jsonl(tmp_path / "functions.jsonl", [row])
    assert len(path.read_bytes()) > 4096
    assert detect_format(path) == "juliet"
    (record,) = only_records(load(path))
    assert record.func == row["func_anon"]
    assert record.source == "juliet"


def test_split_and_max_records(tmp_path: Path) -> None:
    rows = [{"target": i % 2, "func": f"int f{i}(void) {{ return {i}; }}"} for i in range(5)]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    records = only_records(load(path, split="valid", max_records=3))
    assert len(records) == 3
    assert all(r.meta["split"] == "valid" for r in records)


# ----------------------------------------------------------------------------- Juliet


def juliet_rows() -> list[dict[str, Any]]:
    return [
        {
            "func": "void CWE121_bad()\r\n{\r\n    /* FLAW: */ char b[10]; b[10] = 0;\r\n}",
            "target": 1,
            "cwe": "CWE121",
            "testcase": "CWE121_Stack_Based_Buffer_Overflow__char_01.c",
            "source": "juliet",
            "function": "CWE121_bad",
            "flow_variant": "01",
            "group": "CWE121__char",
            "func_anon": "void id_1()\n{\n    char b[10]; b[10] = 0;\n}",
        },
        {
            "func": "void goodG2B()\r\n{\r\n    /* FIX: */ char b[10]; b[9] = 0;\r\n}",
            "target": 0,
            "cwe": "CWE121",
            "testcase": "CWE121_Stack_Based_Buffer_Overflow__cpp_02.cpp",
            "source": "juliet",
            "function": "goodG2B",
            "flow_variant": "02",
            "group": "CWE121__cpp",
            "func_anon": "void id_1()\n{\n    char b[10]; b[9] = 0;\n}",
        },
    ]


def test_juliet_uses_func_anon_by_default(tmp_path: Path) -> None:
    rows = juliet_rows()
    path = write_jsonl(tmp_path / "juliet_functions.jsonl", rows)
    assert detect_format(path) == "juliet"
    records = only_records(load(path))
    assert [r.func for r in records] == [row["func_anon"] for row in rows]
    assert [r.label for r in records] == [1, 0]
    assert [r.cwe for r in records] == ["CWE-121", "CWE-121"]
    assert [r.group for r in records] == ["CWE121__char", "CWE121__cpp"]
    assert [r.meta["language"] for r in records] == ["c", "cpp"]
    assert [r.meta["flow_variant"] for r in records] == ["01", "02"]
    assert [r.meta["testcase"] for r in records] == [row["testcase"] for row in rows]
    assert all(r.source == "juliet" and r.project == "juliet" for r in records)
    assert all(r.meta["text_field"] == "func_anon" for r in records)
    assert [r.id for r in records] == ["juliet_functions:1", "juliet_functions:2"]


def test_juliet_func_on_request(tmp_path: Path) -> None:
    rows = juliet_rows()
    path = write_jsonl(tmp_path / "juliet_functions.jsonl", rows)
    records = only_records(load(path, juliet_text_field="func"))
    assert [r.func for r in records] == [row["func"] for row in rows]
    assert all(r.meta["text_field"] == "func" for r in records)


def test_juliet_detected_by_content_and_missing_anon_is_rejected(tmp_path: Path) -> None:
    rows = juliet_rows()
    del rows[1]["func_anon"]
    path = write_jsonl(tmp_path / "functions.jsonl", rows)  # no "juliet" in the name
    assert detect_format(path) == "juliet"
    items = load(path)
    assert isinstance(items[0], FunctionRecord)
    assert isinstance(items[1], Reject)
    assert (items[1].reason, items[1].line) == ("missing_field", 2)
    assert "func_anon" in items[1].detail


# ----------------------------------------------------------------------------- generic JSONL


def test_generic_jsonl_with_custom_field_names(tmp_path: Path) -> None:
    rows = [
        {
            "code": FUNC_A,
            "vulnerable": "true",
            "name": "fn-a",
            "repo": "linux",
            "cwe_id": "cwe_787",
            "family": "g1",
            "w": "2.5",
            "file": "src/a.cc",
            "extra": "kept",
        },
        {"code": FUNC_B, "vulnerable": 0, "name": "fn-b", "repo": "curl", "family": "g2"},
    ]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    assert detect_format(path) == "jsonl"
    fields = FieldMap(
        func="code",
        label="vulnerable",
        id="name",
        project="repo",
        cwe="cwe_id",
        group="family",
        weight="w",
    )
    records = only_records(load(path, fmt="jsonl", fields=fields))
    a, b = records
    assert (a.id, a.func, a.label, a.project, a.cwe, a.group, a.weight) == (
        "mine:fn-a",
        FUNC_A,
        1,
        "linux",
        "CWE-787",
        "g1",
        2.5,
    )
    assert a.source == "mine"
    assert a.meta["language"] == "cpp"  # from the .cc file name
    assert a.meta["extra"] == "kept"
    assert (b.id, b.label, b.project, b.cwe, b.weight) == ("mine:fn-b", 0, "curl", None, 1.0)


def test_generic_jsonl_default_fields_refuse_other_names(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", [{"code": FUNC_A, "vulnerable": 1}])
    (item,) = load(path, fmt="jsonl")
    assert isinstance(item, Reject)
    assert item.reason == "missing_field" and "'func'" in item.detail


def test_generic_jsonl_negative_weight_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "w.jsonl", [{"func": FUNC_A, "target": 1, "w": -1}])
    (item,) = load(path, fmt="jsonl", fields=FieldMap(weight="w"))
    assert isinstance(item, Reject) and item.reason == "invalid_weight"
    assert "negative" in item.detail


# ----------------------------------------------------------------------------- weights


def test_weight_field_is_read_by_default(tmp_path: Path) -> None:
    """No FieldMap given: a record's ``weight`` field is its weight; without it, 1.0."""
    rows = [
        {"func": FUNC_A, "target": 1, "weight": 2.5},
        {"func": FUNC_B, "target": 0},
        {"func": FUNC_C, "target": 0, "weight": "0.25"},
        {"func": FUNC_C + " ", "target": 1, "weight": 0},
        {"func": FUNC_A + " ", "target": 0, "weight": None},
    ]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    records = only_records(load(path, fmt="jsonl"))
    assert [r.weight for r in records] == [2.5, 1.0, 0.25, 0.0, 1.0]
    assert all("weight" not in r.meta for r in records)  # the weight is a field, not metadata


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b"NaN", "weight_not_finite", "not finite"),
        (b"Infinity", "weight_not_finite", "not finite"),
        (b"-Infinity", "weight_not_finite", "not finite"),
        (b"1e999", "weight_not_finite", "not finite"),
        (b'"nan"', "weight_not_finite", "not finite"),
        (b'"inf"', "weight_not_finite", "not finite"),
        (b"-0.5", "invalid_weight", "negative"),
        (b'"heavy"', "invalid_weight", "not a number"),
        (b"true", "invalid_weight", "not a number"),
        (b"[2]", "invalid_weight", "not a number"),
    ],
)
def test_bad_weights_are_rejected_each_with_its_reason(
    tmp_path: Path, raw: bytes, reason: str, detail: str
) -> None:
    path = tmp_path / "w.jsonl"
    path.write_bytes(
        b'{"func": "int f(void) { return 0; }", "target": 1, "weight": ' + raw + b"}\n"
    )
    (item,) = load(path, fmt="jsonl")
    assert isinstance(item, Reject), item
    assert (item.reason, item.line) == (reason, 1)
    assert detail in item.detail and "'weight'" in item.detail


def test_weight_field_name_is_configurable_and_can_be_switched_off(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mine.jsonl", [{"func": FUNC_A, "target": 1, "weight": 9, "importance": 3}]
    )
    (named,) = only_records(load(path, fmt="jsonl", fields=FieldMap(weight="importance")))
    assert named.weight == 3.0 and named.meta["weight"] == 9  # an unmapped field is metadata
    (off,) = only_records(load(path, fmt="jsonl", fields=FieldMap(weight=None)))
    assert off.weight == 1.0


def test_weights_in_csv_devign_codexglue_and_juliet(tmp_path: Path) -> None:
    csv_path = tmp_path / "w.csv"
    csv_path.write_text(
        'func,target,weight\n"int f(void) { return 1; }",1,3\n"int g(void) { return 2; }",0,\n'
        '"int h(void) { return 3; }",0,nan\n',
        encoding="utf-8",
    )
    a, b, c = load(csv_path)
    assert isinstance(a, FunctionRecord) and isinstance(b, FunctionRecord)
    assert (a.weight, b.weight) == (3.0, 1.0)
    assert isinstance(c, Reject) and c.reason == "weight_not_finite" and c.line == 4

    devign = tmp_path / "function.json"
    devign.write_text(
        json.dumps([{"func": FUNC_A, "target": 1, "weight": 4}, {"func": FUNC_B, "target": 0}]),
        encoding="utf-8",
    )
    assert [r.weight for r in only_records(load(devign))] == [4.0, 1.0]

    cxg = write_jsonl(
        tmp_path / "cxg.jsonl",
        [{"func": FUNC_A, "target": 1, "idx": 0, "weight": 0.5},
         {"func": FUNC_B, "target": 0, "idx": 1, "weight": -1}],
    )  # fmt: skip
    kept, refused = load(cxg, fmt="codexglue")
    assert isinstance(kept, FunctionRecord) and kept.weight == 0.5
    assert isinstance(refused, Reject) and refused.reason == "invalid_weight"

    juliet = write_jsonl(
        tmp_path / "juliet_w.jsonl",
        [{"func_anon": FUNC_A, "target": 1, "weight": 2},
         {"func_anon": FUNC_B, "target": 0, "weight": float("inf")}],
    )  # fmt: skip
    kept, refused = load(juliet)
    assert isinstance(kept, FunctionRecord) and kept.weight == 2.0 and kept.source == "juliet"
    assert isinstance(refused, Reject) and refused.reason == "weight_not_finite"


# ----------------------------------------------------------------------------- CSV


def test_csv_with_quoted_multiline_functions(tmp_path: Path) -> None:
    path = tmp_path / "funcs.csv"
    path.write_text(
        "func,target,project\n"
        '"int f(void)\n{\n    return ""x"" [0];\n}",1,p1\n'
        '"int g(void) { return 1; }",0,p2\n',
        encoding="utf-8",
    )
    assert detect_format(path) == "csv"
    records = only_records(load(path))
    assert [r.func for r in records] == [
        'int f(void)\n{\n    return "x" [0];\n}',
        "int g(void) { return 1; }",
    ]
    assert [r.label for r in records] == [1, 0]
    assert [r.project for r in records] == ["p1", "p2"]
    # 'line' is where the record starts in the file (header is line 1)
    assert [r.meta["line"] for r in records] == [2, 6]
    assert len({r.id for r in records}) == 2


def test_csv_invalid_utf8_keeps_the_records_before_it(tmp_path: Path) -> None:
    path = tmp_path / "funcs.csv"
    path.write_bytes(
        b"func,target\n"
        b'"int f(void)\n{\n    return 0;\n}",0\n'
        b'"int g(void) { return 1; }",1\n'
        b'"int h(void) { return \xff; }",1\n'
    )
    items = load(path)
    assert [i.func for i in items if isinstance(i, FunctionRecord)] == [
        "int f(void)\n{\n    return 0;\n}",
        "int g(void) { return 1; }",
    ]
    assert isinstance(items[-1], Reject)
    assert (items[-1].reason, items[-1].line) == ("invalid_utf8", 7)


def test_csv_gzip_and_bad_label(tmp_path: Path) -> None:
    path = tmp_path / "funcs.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        fh.write("func,target\nint a(void){return 0;},1\nint b(void){return 1;},maybe\n")
    assert detect_format(path) == "csv"
    items = load(path)
    assert isinstance(items[0], FunctionRecord) and items[0].label == 1
    assert isinstance(items[1], Reject)
    assert (items[1].reason, items[1].line) == ("invalid_label", 3)


# ----------------------------------------------------------------------------- gzip


@pytest.mark.parametrize("stem", ["valid", "juliet_functions", "mine"])
def test_gzip_is_transparent(tmp_path: Path, stem: str) -> None:
    if stem == "juliet_functions":
        rows: list[dict[str, Any]] = juliet_rows()
    else:
        rows = [
            {"project": "qemu", "commit_id": None, "target": 1, "func": FUNC_A, "idx": 3},
            {"project": "qemu", "commit_id": None, "target": 0, "func": FUNC_B, "idx": 5},
            {"project": "qemu", "commit_id": None, "target": 1, "func": FUNC_C},
        ]
        if stem == "mine":
            rows = [{"func": r["func"], "target": r["target"]} for r in rows]
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    plain = write_jsonl(tmp_path / "plain" / f"{stem}.jsonl", rows)
    packed = write_jsonl(tmp_path / "gz" / f"{stem}.jsonl.gz", rows)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"
    assert detect_format(plain) == detect_format(packed)

    def strip(r: FunctionRecord) -> dict[str, Any]:
        d = r.to_dict()
        assert d["meta"].pop("file") in (str(plain), str(packed))
        return d

    a = [strip(r) for r in only_records(load(plain))]
    b = [strip(r) for r in only_records(load(packed))]
    assert len(a) == len(rows)
    assert a == b


def test_gzip_detected_by_magic_not_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"  # gzip bytes under a plain name
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"func": FUNC_A, "target": 1, "idx": 1}) + "\n")
    (record,) = only_records(load(path))
    assert record.func == FUNC_A


def test_truncated_gzip_raises_data_error(tmp_path: Path) -> None:
    full = gzip.compress(
        ("".join(json.dumps({"func": FUNC_C * 50, "target": 1}) + "\n" for _ in range(20))).encode()
    )
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz"):
        load(path, fmt="jsonl")


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.csv", b"func,target\n", "csv"),
        ("a.CSV.gz", None, "csv"),
        ("my_juliet.jsonl", b'{"func": "x", "target": 1}\n', "juliet"),
        ("function.json", b'  \n[{"func": "x", "target": 1}]', "devign"),
        ("data.jsonl", b'{"func": "x", "target": 1, "func_anon": "y"}\n', "juliet"),
        ("data.jsonl", b'\n\n{"func": "x", "target": 0, "idx": 3}\n', "codexglue"),
        ("data.jsonl", b'{"code": "x", "label": 0}\n', "jsonl"),
        ("data.jsonl", b"not json at all\n", "jsonl"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: bytes | None, expected: str) -> None:
    path = tmp_path / name
    if content is None:
        path.write_bytes(gzip.compress(b"func,target\n"))
    else:
        path.write_bytes(content)
    assert detect_format(path) == expected


def test_detect_format_sees_through_gzip(tmp_path: Path) -> None:
    path = tmp_path / "function.json.gz"
    path.write_bytes(gzip.compress(json.dumps([{"func": FUNC_A, "target": 0}]).encode()))
    assert detect_format(path) == "devign"
    (record,) = only_records(load(path))
    assert record.idx == 0


def test_unknown_format_raises(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"func": FUNC_A, "target": 1}])
    with pytest.raises(DataError, match="unknown format"):
        load(path, fmt="parquet")


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1, 1),
        (True, 1),
        (False, 0),
        (0.0, 0),
        (1.0, 1),
        ("0", 0),
        ("1", 1),
        ("true", 1),
        ("false", 0),
        (" TRUE ", 1),
        ("False", 0),
    ],
)
def test_parse_label_accepts(value: Any, expected: int) -> None:
    result = parse_label(value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    "value", [2, -1, 0.5, 1.5, float("nan"), "maybe", "", "2", "yes", None, [], {}, [1]]
)
def test_parse_label_refuses(value: Any) -> None:
    assert parse_label(value) is None


def test_invalid_labels_become_rejects(tmp_path: Path) -> None:
    rows = [
        {"func": FUNC_A, "target": "maybe"},
        {"func": FUNC_A, "target": 2},
        {"func": FUNC_A, "target": None},
        {"func": FUNC_A},
        {"func": FUNC_B, "target": "1"},
    ]
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    items = load(path, fmt="jsonl")
    reasons = [i.reason if isinstance(i, Reject) else "ok" for i in items]
    assert reasons == ["invalid_label", "invalid_label", "invalid_label", "missing_field", "ok"]
    assert [i.line for i in items if isinstance(i, Reject)] == [1, 2, 3, 4]
    assert isinstance(items[4], FunctionRecord) and items[4].label == 1


# ----------------------------------------------------------------------------- Hugging Face


def test_hf_route_fails_fast_when_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the hub must not be contacted when HF_HUB_OFFLINE is set")

    import httpx

    monkeypatch.setattr(httpx, "head", no_network)
    with pytest.raises(DataError) as info:
        load(tmp_path / "ignored", fmt="hf")
    assert "offline" in str(info.value).lower()


# ----------------------------------------------------------------------------- errors, ids


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.jsonl"
    with pytest.raises(DataError) as info:
        load(path)
    assert str(path) in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a regular file"):
        load(tmp_path)


def test_jsonl_bad_lines_become_rejects_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"func": "int a(void){return 0;}", "target": 0}\n'
        b"\n"
        b"{broken\n"
        b"[1, 2]\n"
        b'{"func": "int b(void){return 1;}\xff", "target": 1}\n'
        b'{"func": 42, "target": 1}\n'
        b'{"func": "  \\n ", "target": 1}\n'
        b'{"func": "int c(void){return 2;}", "target": 1}\n'
    )
    items = load(path, fmt="jsonl")
    got = [(i.reason, i.line) if isinstance(i, Reject) else ("ok", i.meta["line"]) for i in items]
    assert got == [
        ("ok", 1),
        ("invalid_json", 3),
        ("not_an_object", 4),
        ("invalid_utf8", 5),
        ("invalid_type", 6),
        ("empty_function", 7),
        ("ok", 8),
    ]
    assert all(i.file == str(path) for i in items if isinstance(i, Reject))


def test_record_ids_unique_per_file(tmp_path: Path) -> None:
    funcs = [f"int f{i}(int x) {{ return x * {i}; }}" for i in range(30)]
    files = {
        "devign": tmp_path / "function.json",
        "codexglue": tmp_path / "cx.jsonl",
        "juliet": tmp_path / "juliet.jsonl",
        "jsonl": tmp_path / "plain.jsonl",
        "csv": tmp_path / "plain.csv",
    }
    files["devign"].write_text(
        json.dumps([{"func": f, "target": i % 2} for i, f in enumerate(funcs)])
    )
    write_jsonl(
        files["codexglue"],
        [{"func": f, "target": i % 2, "idx": 100 + i} for i, f in enumerate(funcs)],
    )
    write_jsonl(
        files["juliet"],
        [{"func": f, "func_anon": f, "target": i % 2, "cwe": "CWE78"} for i, f in enumerate(funcs)],
    )
    write_jsonl(files["jsonl"], [{"func": f, "target": i % 2} for i, f in enumerate(funcs)])
    files["csv"].write_text(
        "func,target\n" + "".join(f'"{f}",{i % 2}\n' for i, f in enumerate(funcs))
    )
    for fmt, path in files.items():
        records = only_records(load(path, fmt=fmt))
        assert len(records) == len(funcs), fmt
        assert len({r.id for r in records}) == len(funcs), fmt


# ----------------------------------------------------------------------------- real data


def real_file(name: str) -> Path:
    path = DATA_DIR / name
    if not path.exists():
        pytest.skip(f"real data not present: {path} (see ../shared/data/README.md)")
    return path


def first_lines(path: Path, n: int) -> list[dict[str, Any]]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


@pytest.mark.slow
def test_real_devign_valid_first_50() -> None:
    path = real_file("devign_valid.jsonl.gz")
    raw = first_lines(path, 50)
    records = only_records(list(iter_records(path, max_records=50)))
    assert len(records) == 50
    for r, row in zip(records, raw, strict=True):
        assert r.label in (0, 1) and r.label == row["target"]
        assert isinstance(r.idx, int) and r.idx == row["idx"]
        assert r.id == f"devign:{row['idx']}"
        assert r.source == "devign"
        assert r.project in ("FFmpeg", "qemu") and r.project == row["project"]
        assert r.commit_id == row["commit_id"]
        assert r.func == row["func"]
    assert len({r.id for r in records}) == 50


@pytest.mark.slow
def test_real_juliet_first_50_uses_func_anon() -> None:
    path = real_file("juliet_functions.jsonl.gz")
    raw = first_lines(path, 50)
    records = only_records(list(iter_records(path, max_records=50)))
    assert len(records) == 50
    for r, row in zip(records, raw, strict=True):
        assert r.label in (0, 1) and r.label == row["target"]
        assert r.func == row["func_anon"]
        assert r.func != row["func"]
        assert r.source == "juliet"
        assert r.group == row["group"]
        assert r.cwe == "CWE-" + row["cwe"][3:]
        expected_lang = "cpp" if row["testcase"].endswith(".cpp") else "c"
        assert r.meta["language"] == expected_lang
    assert len({r.id for r in records}) == 50
