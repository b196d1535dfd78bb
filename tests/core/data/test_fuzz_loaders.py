"""Property tests of the loaders (hypothesis, a few hundred examples; ``bench/fuzz.py`` runs
the long coverage-guided fuzzing): any bytes in any format give records or rejects, or one
``DataError``; every item can be written back as UTF-8 JSON Lines; a JSON Lines file gives
exactly one item per non-blank line, so nothing is dropped silently."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamguard_core.data.loaders import DataError, iter_records
from streamguard_core.io import _dumps_line, to_jsonable
from streamguard_core.schema import FunctionRecord, Reject

FORMATS = ("auto", "devign", "codexglue", "juliet", "jsonl", "csv")
NAMES = ("data.jsonl", "data.csv", "function.json", "juliet_a.jsonl")
FIELDS = ("func", "func_anon", "target", "label", "weight", "idx", "cwe", "id", "project")
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=4), scalars,
                                                                   max_size=2)  # fmt: skip
records = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=6)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def load_and_check(path: Path, fmt: str) -> list[FunctionRecord | Reject] | None:
    """The items, checked; None when the file was refused as a whole (DataError)."""
    try:
        loaded = list(iter_records(path, fmt))
    except DataError:
        return None
    for item in loaded:
        if isinstance(item, FunctionRecord):
            assert item.func.strip() and item.label in (0, 1)
            assert math.isfinite(item.weight) and item.weight >= 0
        else:
            assert isinstance(item, Reject) and item.line >= 1 and item.reason and item.detail
        _dumps_line(to_jsonable(item.to_dict())).encode("utf-8")  # writable as UTF-8
    return loaded


@SETTINGS
@given(
    rows=st.lists(records, max_size=4),
    ascii_only=st.booleans(),
    bom=st.booleans(),
    blank=st.booleans(),
    gz=st.booleans(),
    noise=st.binary(max_size=12),
    fmt=st.sampled_from(("auto", "codexglue", "juliet", "jsonl")),
)
def test_jsonl_records_one_item_per_line(
    work: Path, rows, ascii_only, bom, blank, gz, noise, fmt
) -> None:
    lines = [json.dumps(r, ensure_ascii=ascii_only).encode() for r in rows]
    if noise and lines:
        lines[len(noise) % len(lines)] += noise  # one line corrupted
    content = (b"\xef\xbb\xbf" if bom else b"") + (b"\n\n" if blank else b"").join(
        line + b"\n" for line in lines
    )
    path = work / ("data.jsonl.gz" if gz else "data.jsonl")
    path.write_bytes(gzip.compress(content) if gz else content)
    loaded = load_and_check(path, fmt)
    if loaded is None:  # only a corrupted first byte (e.g. a UTF-16 BOM) refuses the file
        assert noise
        return
    expected = sum(1 for line in content.removeprefix(b"\xef\xbb\xbf").split(b"\n") if line.strip())
    assert len(loaded) == expected


@SETTINGS
@given(data=st.binary(max_size=400), name=st.sampled_from(NAMES), fmt=st.sampled_from(FORMATS))
def test_any_bytes_in_any_format(work: Path, data: bytes, name: str, fmt: str) -> None:
    path = work / name
    path.write_bytes(data)
    load_and_check(path, fmt)
