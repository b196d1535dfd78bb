"""Bad input end to end through ``streamguard data preprocess``: refused, counted, never fatal.

One JSONL file mixes valid functions with one record of every bad kind; the CLI must exit 0,
write one ``rejects.jsonl`` row per bad record (reason code, file, 1-based line), keep the
valid ones (including pathologically nested functions) and account for every line read.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamguard_core.cli import main

SPLIT_NAMES = ("train", "valid", "test")
BASE_ARGS = [
    "--workers",
    "1",
    "--no-progress",
    "--vocab-size",
    "300",
    "--split-strategy",
    "random",
]

# Small, real-looking C functions; each differs in structure (not just in names or literals),
# so the normalised deduplication keeps every one of them.
VALID_FUNCS: list[tuple[str, int]] = [
    (
        "static int copy_name(char *dst, const char *src)\n{\n    strcpy(dst, src);\n"
        "    return 0;\n}\n",
        1,
    ),
    (
        "static int copy_name_n(char *dst, const char *src, size_t n)\n{\n"
        "    if (n == 0)\n        return -1;\n    strncpy(dst, src, n - 1);\n"
        "    dst[n - 1] = '\\0';\n    return 0;\n}\n",
        0,
    ),
    (
        "int sum_array(const int *v, int n)\n{\n    int s = 0;\n"
        "    for (int i = 0; i < n; i++)\n        s += v[i];\n    return s;\n}\n",
        0,
    ),
    (
        "int read_index(int *table, int idx)\n{\n    return table[idx];\n}\n",
        1,
    ),
    (
        "int read_index_checked(int *table, int len, int idx)\n{\n"
        "    if (idx < 0 || idx >= len)\n        return -1;\n    return table[idx];\n}\n",
        0,
    ),
    (
        "void *dup_buffer(const void *p, size_t n)\n{\n    void *q = malloc(n);\n"
        "    memcpy(q, p, n);\n    return q;\n}\n",
        1,
    ),
    (
        "void *dup_buffer_safe(const void *p, size_t n)\n{\n    void *q = malloc(n);\n"
        "    if (q == NULL)\n        return NULL;\n    memcpy(q, p, n);\n    return q;\n}\n",
        0,
    ),
    (
        "void release(struct node *n)\n{\n    free(n->data);\n    free(n);\n"
        "    n->data = NULL;\n}\n",
        1,
    ),
    (
        "void release_list(struct node *head)\n{\n    while (head) {\n"
        "        struct node *next = head->next;\n        free(head);\n"
        "        head = next;\n    }\n}\n",
        0,
    ),
    (
        "void log_user(const char *msg)\n{\n    printf(msg);\n    fflush(stdout);\n}\n",
        1,
    ),
    (
        'void log_user_fmt(const char *msg)\n{\n    printf("%s\\n", msg);\n}\n',
        0,
    ),
    (
        "int run_cmd(const char *arg)\n{\n    char cmd[256];\n"
        '    sprintf(cmd, "ls %s", arg);\n    return system(cmd);\n}\n',
        1,
    ),
    (
        "unsigned int mul_size(unsigned int a, unsigned int b)\n{\n"
        "    if (a != 0 && b > UINT_MAX / a)\n        return 0;\n    return a * b;\n}\n",
        0,
    ),
    (
        "char *alloc_str(size_t len)\n{\n    char *s = malloc(len + 1);\n"
        "    s[len] = 0;\n    return s;\n}\n",
        1,
    ),
    (
        "int parse_digit(char c)\n{\n    switch (c) {\n    case '0':\n        return 0;\n"
        "    case '1':\n        return 1;\n    default:\n        return -1;\n    }\n}\n",
        0,
    ),
    (
        "int find_char(const char *s, char c)\n{\n    int i = 0;\n    do {\n"
        "        if (s[i] == c)\n            return i;\n    } while (s[i++]);\n    return -1;\n}\n",
        0,
    ),
    (
        "void fill_zero(unsigned char *buf, int len)\n{\n    int i;\n"
        "    for (i = 0; i <= len; i++)\n        buf[i] = 0;\n}\n",
        1,
    ),
    (
        'static int open_config(const char *path)\n{\n    FILE *f = fopen(path, "r");\n'
        "    if (!f)\n        return -errno;\n    fclose(f);\n    return 0;\n}\n",
        0,
    ),
    (
        "int get_field(struct packet *p)\n{\n    return p->hdr->len + p->offset;\n}\n",
        1,
    ),
    (
        "int max3(int a, int b, int c)\n{\n    int m = a > b ? a : b;\n"
        "    return m > c ? m : c;\n}\n",
        0,
    ),
    (
        "void swap_ptr(int **a, int **b)\n{\n    int *t = *a;\n    *a = *b;\n    *b = t;\n}\n",
        0,
    ),
    (
        "int gets_line(void)\n{\n    char line[32];\n    gets(line);\n"
        "    return (int)strlen(line);\n}\n",
        1,
    ),
    (
        "static long file_size(FILE *f)\n{\n    long n;\n    fseek(f, 0, SEEK_END);\n"
        "    n = ftell(f);\n    rewind(f);\n    return n;\n}\n",
        0,
    ),
    (
        "void use_after_free(char *p)\n{\n    free(p);\n    if (p[0] == 'x')\n"
        '        puts("x");\n}\n',
        1,
    ),
]

DEEP_BRACES = "int f(){" + "{" * 5000 + "}" * 5000 + "}"
DEEP_PARENS = "int g(){ return " + "(" * 5000 + "1" + ")" * 5000 + "; }"
BIG_FUNC = "int f(){" + "x++;" * ((10 * 1024 * 1024 - 9) // 4) + "}"
BINARY_FUNC = "".join(chr(i % 32) for i in range(2000))


def random_garbage_line() -> bytes:
    # Pure random bytes on one line (newlines removed so the line count stays exact).
    raw = random.Random(0).randbytes(500).replace(b"\n", b"")
    assert raw.strip(), "the random line must not be blank"
    return raw


@dataclass
class Line:
    raw: bytes
    reason: str | None  # expected reject reason; None means a record that must be kept
    reasons: tuple[str, ...] = ()  # alternatives, when more than one code is acceptable
    rid: str | None = None


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def valid_weight(i: int) -> float | None:
    """The loss weight written for valid function ``i`` (None: no weight field, so 1.0)."""
    return None if i % 3 == 0 else 0.5 * (i % 5)


def build_lines() -> list[Line]:
    valid = []
    for i, (f, y) in enumerate(VALID_FUNCS):
        weight = valid_weight(i)
        fields = (
            {"func": f, "target": y}
            if weight is None
            else {"func": f, "target": y, "weight": weight}
        )
        valid.append(Line(js(fields), None))
    bad = [
        Line(b'{"func": "int broken(void) { return 0; }", "target": 1', "invalid_json"),
        Line(js([{"func": "int arr(void) { return 0; }", "target": 0}]), "not_an_object"),
        Line(js({"target": 1, "project": "qemu"}), "missing_field"),
        Line(js({"func": "int no_label(void) { return 4; }"}), "missing_field"),
        Line(js({"func": "int lbl_a(void) { return 5; }", "target": "maybe"}), "invalid_label"),
        Line(js({"func": "int lbl_b(void) { return 6; }", "target": 2}), "invalid_label"),
        Line(js({"func": "int lbl_c(void) { return 7; }", "target": None}), "invalid_label"),
        Line(js({"func": 12345, "target": 0}), "invalid_type"),
        Line(b'{"func": "int latin(void) { return \xff\xfe; }", "target": 0}', "invalid_utf8"),
        Line(js({"func": "   ", "target": 1}), "empty_function"),
        Line(js({"func": BIG_FUNC, "target": 1}), "too_large"),
        Line(js({"func": BINARY_FUNC, "target": 0}), "binary_content"),
        Line(random_garbage_line(), "invalid_utf8", reasons=("invalid_utf8", "invalid_json")),
        Line(
            b'{"func": "int w_nan(void) { return 8; }", "target": 1, "weight": NaN}',
            "weight_not_finite",
        ),
        Line(
            js({"func": "int w_neg(void) { return 9; }", "target": 0, "weight": -2}),
            "invalid_weight",
        ),
    ]
    deep = [
        Line(js({"func": DEEP_BRACES, "target": 0}), None),
        Line(js({"func": DEEP_PARENS, "target": 1}), None),
    ]
    # Valid records first (format detection reads the first line), bad ones interleaved.
    lines: list[Line] = valid[:4]
    rest = valid[4:]
    for i, item in enumerate(bad + deep):
        lines.append(item)
        if i < len(rest):
            lines.append(rest[i])
    lines.extend(rest[len(bad + deep) :])
    return lines


def write_input(path: Path, lines: list[Line], blank_every: int = 0) -> list[int]:
    """Write the lines (with optional blank lines in between); return each one's line number."""
    numbers: list[int] = []
    with open(path, "wb") as fh:
        line_no = 0
        for i, item in enumerate(lines):
            if blank_every and i and i % blank_every == 0:
                fh.write(b"\n")
                line_no += 1
            fh.write(item.raw + b"\n")
            line_no += 1
            numbers.append(line_no)
    return numbers


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One preprocessing run over the mixed file, shared by the assertions below."""
    tmp = tmp_path_factory.mktemp("bad_input")
    src = tmp / "mixed.jsonl"
    out = tmp / "out"
    lines = build_lines()
    numbers = write_input(src, lines, blank_every=7)
    code = main(["data", "preprocess", "--input", str(src), "--output-dir", str(out), *BASE_ARGS])
    return {"code": code, "src": src, "out": out, "lines": lines, "numbers": numbers}


def test_mixed_file_exits_zero(mixed_run: dict[str, Any]) -> None:
    assert mixed_run["code"] == 0
    for name in ("rejects.jsonl", "preprocessing_metadata.json", "duplicates.jsonl"):
        assert (mixed_run["out"] / name).is_file(), name


def test_every_bad_record_has_one_reject_row(mixed_run: dict[str, Any]) -> None:
    rejects = read_jsonl(mixed_run["out"] / "rejects.jsonl")
    src = str(mixed_run["src"])
    expected = {
        n: item
        for item, n in zip(mixed_run["lines"], mixed_run["numbers"], strict=True)
        if item.reason is not None
    }
    by_line: dict[int, list[dict[str, Any]]] = {}
    for row in rejects:
        by_line.setdefault(row["line"], []).append(row)
    assert sorted(by_line) == sorted(expected), rejects
    for n, item in expected.items():
        (row,) = by_line[n]
        assert row["file"] == src
        allowed = item.reasons or (item.reason,)
        assert row["reason"] in allowed, (n, row)
        assert row["detail"]
        assert len(row.get("preview", "")) <= 200


def test_reject_reason_codes_are_all_present(mixed_run: dict[str, Any]) -> None:
    reasons = [row["reason"] for row in read_jsonl(mixed_run["out"] / "rejects.jsonl")]
    for code in (
        "invalid_json",
        "not_an_object",
        "missing_field",
        "invalid_label",
        "invalid_type",
        "invalid_utf8",
        "empty_function",
        "too_large",
        "binary_content",
        "weight_not_finite",
        "invalid_weight",
    ):
        assert code in reasons, code
    assert reasons.count("missing_field") == 2
    assert reasons.count("invalid_label") == 3
    assert len(reasons) == 15


def test_size_and_binary_rejects_come_from_validation(mixed_run: dict[str, Any]) -> None:
    rows = {r["reason"]: r for r in read_jsonl(mixed_run["out"] / "rejects.jsonl")}
    assert rows["too_large"]["stage"] == "validate"
    assert "1,000,000" in rows["too_large"]["detail"]
    assert rows["binary_content"]["stage"] == "validate"
    assert rows["invalid_json"]["stage"] == "load"


def test_accounting_matches_the_file(mixed_run: dict[str, Any]) -> None:
    meta = json.loads((mixed_run["out"] / "preprocessing_metadata.json").read_text())
    counts = meta["counts"]
    raw = mixed_run["src"].read_bytes()
    non_blank = sum(1 for line in raw.split(b"\n") if line.strip())
    assert non_blank == len(mixed_run["lines"])
    assert counts["read"] == non_blank
    assert counts["read"] == counts["kept"] + counts["rejected"] + counts["deduplicated"]
    assert counts["read_per_file"] == {str(mixed_run["src"]): non_blank}
    assert counts["rejected"] == len(read_jsonl(mixed_run["out"] / "rejects.jsonl"))
    assert counts["deduplicated"] == 0
    kept_expected = sum(1 for item in mixed_run["lines"] if item.reason is None)
    assert counts["kept"] == kept_expected
    assert sum(counts["kept_per_split"].values()) == kept_expected
    assert counts["rejected_by_reason"]["invalid_label"] == 3


def test_kept_records_are_written_to_the_splits(mixed_run: dict[str, Any]) -> None:
    out = mixed_run["out"]
    rows = []
    for split in SPLIT_NAMES:
        split_rows = read_jsonl(out / split / "records.jsonl")
        assert split_rows, f"split {split} is empty"
        assert all(r["split"] == split for r in split_rows)
        rows += split_rows
    kept_funcs = [item for item in mixed_run["lines"] if item.reason is None]
    assert sorted(r["func"] for r in rows) == sorted(
        json.loads(item.raw)["func"] for item in kept_funcs
    )
    numbers = {
        n
        for item, n in zip(mixed_run["lines"], mixed_run["numbers"], strict=True)
        if item.reason is None
    }
    assert {r["meta"]["line"] for r in rows} == numbers
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["label"] in (0, 1) for r in rows)


def test_record_weights_reach_the_processed_records(mixed_run: dict[str, Any]) -> None:
    """Each kept function's ``weight`` field (1.0 without one) is in its records.jsonl row."""
    out = mixed_run["out"]
    expected = {f: valid_weight(i) for i, (f, _) in enumerate(VALID_FUNCS)}
    rows = [r for s in SPLIT_NAMES for r in read_jsonl(out / s / "records.jsonl")]
    weights = {r["func"]: r["weight"] for r in rows if r["func"] in expected}
    assert len(weights) == len(expected)
    for func, weight in weights.items():
        assert weight == (1.0 if expected[func] is None else expected[func]), func
    assert len(set(weights.values())) > 2  # really non-uniform
    meta = json.loads((out / "preprocessing_metadata.json").read_text())
    weighted = meta["counts"]["weighted_per_split"]
    assert sum(weighted.values()) == sum(1 for r in rows if r["weight"] != 1.0) > 0


@pytest.mark.parametrize("func", [DEEP_BRACES, DEEP_PARENS], ids=["braces", "parens"])
def test_deeply_nested_functions_are_kept_with_a_graph(
    mixed_run: dict[str, Any], func: str
) -> None:
    out = mixed_run["out"]
    rows = [r for s in SPLIT_NAMES for r in read_jsonl(out / s / "records.jsonl")]
    (row,) = [r for r in rows if r["func"] == func]
    # one node per nesting level at least, unless the graph was cut at --max-nodes
    assert row["graph"]["num_nodes"] >= 5000 or row["graph"]["truncated"]
    assert row["graph"]["status"] in ("ok", "ok_with_errors", "fallback")
    assert row["n_tokens"] <= 512


def test_no_valid_records_exits_one_and_still_writes_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "all_bad.jsonl"
    bad = [item for item in build_lines() if item.reason is not None]
    numbers = write_input(src, bad)
    out = tmp_path / "out"
    code = main(["data", "preprocess", "--input", str(src), "--output-dir", str(out), *BASE_ARGS])
    assert code == 1
    err = capsys.readouterr().err
    assert "no valid records" in err
    rejects = read_jsonl(out / "rejects.jsonl")
    assert sorted(r["line"] for r in rejects) == numbers
    assert all(r["file"] == str(src) for r in rejects)
    assert not (out / "preprocessing_metadata.json").exists()


def test_missing_input_file_exits_one_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "does_not_exist.jsonl"
    out = tmp_path / "out"
    code = main(
        ["data", "preprocess", "--input", str(missing), "--output-dir", str(out), *BASE_ARGS]
    )
    assert code == 1
    assert str(missing) in capsys.readouterr().err


def test_hf_format_offline_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(
        [
            "data",
            "preprocess",
            "--format",
            "hf",
            "--input",
            "ignored",
            "--output-dir",
            str(tmp_path / "out"),
            *BASE_ARGS,
        ]
    )
    assert code == 1
    assert "offline" in capsys.readouterr().err.lower()


def test_unknown_flag_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "preprocess", "--output-dir", str(tmp_path), "--no-such-flag"])
    assert info.value.code == 2
