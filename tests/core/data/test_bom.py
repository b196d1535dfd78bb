"""UTF-8 files with a byte-order mark load like files without one (Windows editors write it),
in every text format and gzip'd; UTF-16/32 files are refused with one clear error."""

from __future__ import annotations

import codecs
import gzip
import json
from pathlib import Path

import pytest

from streamguard_core.data.loaders import DataError, detect_format, iter_records
from streamguard_core.schema import FunctionRecord, Reject

BOM = codecs.BOM_UTF8
ROWS = [
    {"func": "int f(char *s) { char b[8]; strcpy(b, s); return 0; }", "target": 1, "idx": 7},
    {"func": "int g(int a) { return a + 1; }", "target": 0, "idx": 8},
]


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def load(path: Path, fmt: str = "auto") -> tuple[list[FunctionRecord], list[Reject]]:
    items = list(iter_records(path, fmt))
    return (
        [i for i in items if isinstance(i, FunctionRecord)],
        [i for i in items if isinstance(i, Reject)],
    )


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_jsonl_with_bom(tmp_path: Path, gz: bool) -> None:
    content = BOM + jsonl(ROWS)
    path = tmp_path / ("data.jsonl.gz" if gz else "data.jsonl")
    path.write_bytes(gzip.compress(content) if gz else content)
    assert detect_format(path) == "codexglue"  # the BOM does not hide the first record
    records, rejects = load(path)
    assert rejects == []
    assert [(r.idx, r.label, r.meta["line"]) for r in records] == [(7, 1, 1), (8, 0, 2)]
    assert records[0].func == ROWS[0]["func"]


def test_bom_alone_on_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(BOM + b"\n" + jsonl(ROWS))
    records, rejects = load(path, "jsonl")
    assert rejects == [] and [r.meta["line"] for r in records] == [2, 3]


def test_csv_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(BOM + b'func,target,weight\n"int f(void) { return 0; }",1,0.5\n')
    records, rejects = load(path)
    assert rejects == []  # without -sig the first column would be '\ufefffunc': missing_field
    (record,) = records
    assert (record.func, record.label, record.weight) == ("int f(void) { return 0; }", 1, 0.5)
    assert "\ufeff" not in json.dumps(record.meta)


def test_gzip_csv_and_devign_array_with_bom(tmp_path: Path) -> None:
    csv_path = tmp_path / "data.csv.gz"
    csv_path.write_bytes(gzip.compress(BOM + b"func,target\nint h(void);,0\n"))
    devign = tmp_path / "function.json"
    devign.write_bytes(BOM + json.dumps(ROWS).encode())
    assert detect_format(devign) == "devign"
    for path, count in ((csv_path, 1), (devign, 2)):
        records, rejects = load(path)
        assert rejects == [] and len(records) == count


@pytest.mark.parametrize(("encoding", "name"), [("utf-16", "UTF-16"), ("utf-32", "UTF-32")])
def test_utf16_and_utf32_are_refused_clearly(tmp_path: Path, encoding: str, name: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(jsonl(ROWS).decode().encode(encoding))  # Python writes the BOM first
    with pytest.raises(DataError, match=rf"data.jsonl: the file is {name} encoded .* iconv"):
        list(iter_records(path))
