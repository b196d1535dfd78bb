"""Inputs that crashed the loaders, each now a record, a reject with a reason, or one clear
``DataError``. Found by ``bench/fuzz.py`` (truncated gzip, lone surrogate escapes) or while
fixing those (the rest); each crashed the loaders as they were before (EOFError,
UnicodeEncodeError when writing, OverflowError, ValueError, RecursionError)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from streamguard_core.data.loaders import DataError, iter_records
from streamguard_core.io import read_jsonl, write_jsonl
from streamguard_core.schema import FunctionRecord, Reject

FUNC = b'"int f(void) { return 0; }"'
DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000


def items(path: Path, fmt: str = "auto") -> list[FunctionRecord | Reject]:
    """Every item, each written to JSON Lines and read back (the next step of any pipeline)."""
    loaded = list(iter_records(path, fmt))
    out = path.parent / "written.jsonl"
    write_jsonl(out, (i.to_dict() for i in loaded))
    assert len(list(read_jsonl(out))) == len(loaded)
    return loaded


def reasons(loaded: list[FunctionRecord | Reject]) -> list[str]:
    return ["record" if isinstance(i, FunctionRecord) else i.reason for i in loaded]


def test_truncated_gzip_with_format_detection(tmp_path: Path) -> None:
    """Fuzz crash: EOFError from detect_format reading a cut gzip stream."""
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"func": ' + FUNC + b', "target": 1}\n' * 50)[:40])
    with pytest.raises(DataError, match=r"data.jsonl.gz: cannot read file: Compressed file"):
        list(iter_records(path))


@pytest.mark.parametrize(
    ("fmt", "line"),
    [
        ("auto", b'{"func": "int f(void) { return \\ud800; }", "target": 1}'),
        ("jsonl", b'{"func": "int f(void);", "label": 1, "note": ["ok", {"x": "\\udc80"}]}'),
        ("jsonl", b'{"func": "int f(void);", "label": 1, "\\udfff": 2}'),
    ],
    ids=["in-func", "nested-value", "in-key"],
)
def test_lone_surrogate_escapes_reject_their_record(tmp_path: Path, fmt: str, line: bytes) -> None:
    """Fuzz crash: valid JSON, but a lone surrogate is no Unicode text; writing the record
    (records.jsonl, rejects.jsonl) raised UnicodeEncodeError, and the tokenizer a TypeError."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(line + b"\n" + b'{"func": ' + FUNC + b', "target": 0, "label": 0}\n')
    loaded = items(path, fmt)
    assert reasons(loaded) == ["invalid_unicode", "record"]
    assert loaded[0].line == 1 and "lone surrogate" in loaded[0].detail


def test_lone_surrogate_in_a_devign_array(tmp_path: Path) -> None:
    path = tmp_path / "function.json"
    path.write_bytes(b'[{"func": "int f(void) { \\udc80 }", "target": 1}, {"func": ' + FUNC
                     + b', "target": 0}]')  # fmt: skip
    assert reasons(items(path)) == ["invalid_unicode", "record"]


def test_csv_bytes_that_are_not_utf8_in_the_header_or_extra_fields(tmp_path: Path) -> None:
    """A bad byte in a field name (every row's meta key) or in a row's extra fields."""
    path = tmp_path / "data.csv"
    path.write_bytes(b"func,target,n\xffote\nint f(void);,1,x\n")
    assert reasons(items(path)) == ["invalid_utf8"]
    path.write_bytes(b"func,target\nint f(void);,1,extra\xfe\nint g(void);,0\n")
    assert reasons(items(path)) == ["invalid_utf8", "record"]


def test_weight_beyond_float_range_is_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"func": ' + FUNC + b', "target": 1, "weight": 1' + b"0" * 400 + b"}\n")
    (reject,) = items(path)
    assert isinstance(reject, Reject) and reject.reason == "invalid_weight"


@pytest.mark.parametrize("idx", ["\u00b2", "9" * 5000], ids=["superscript-digit", "5000-digits"])
def test_unusable_idx_strings_are_ignored(tmp_path: Path, idx: str) -> None:
    """``str.isdigit`` accepts '²' and int() refuses over 4,300 digits: idx is left empty."""
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"func": "int f(void);", "target": 1, "idx": idx}) + "\n")
    (record,) = items(path)
    assert isinstance(record, FunctionRecord) and record.idx is None


def test_deeply_nested_json(tmp_path: Path) -> None:
    """RecursionError in the stdlib parser: a reject for a line, a DataError for an array."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(DEEP + b"\n" + b'{"func": ' + FUNC + b', "target": 1}\n')
    loaded = items(path)  # the first line also drives format detection
    assert reasons(loaded) == ["invalid_json", "record"]
    assert loaded[0].detail == "nested too deeply"
    devign = tmp_path / "function.json"
    devign.write_bytes(b"[" * 5000 + b"]" * 5000)
    with pytest.raises(DataError, match=r"function\.json: not a readable JSON array: nested"):
        list(iter_records(devign))
